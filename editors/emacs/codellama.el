;;; codellama.el --- Offline Code Llama ghost text, code actions and chat over eglot  -*- lexical-binding: t; -*-

;; Version: 0.1.0
;; Package-Requires: ((emacs "28.1") (eglot "1.9") (jsonrpc "1.0.14"))
;; Keywords: tools, convenience, languages
;; URL: https://example.invalid/codellama-lsp
;; SPDX-License-Identifier: MIT

;;; Commentary:

;; A thin client for the `codellama-lsp' language server, built on eglot
;; (built in from Emacs 29; the `eglot' package on 28).  The server keeps a
;; local Code Llama model resident; nothing leaves the machine.
;;
;;   (require 'codellama)
;;   (codellama-setup '(python-mode python-ts-mode))   ; then M-x eglot in a Python buffer
;;
;; - Ghost text: `textDocument/inlineCompletion' (LSP 3.18) drawn as an
;;   overlay while you type.  TAB accepts it, M-f its next word, C-e its
;;   first line, M-n / M-p cycle, C-g dismisses.  Eglot has no inline
;;   completion of its own, so requests go straight to the eglot server
;;   connection with `jsonrpc-async-request'.
;; - Code actions (Explain, Fix, Document, Write unit tests) come through
;;   `eglot-code-actions' as usual.
;; - `codellama-explain' and `codellama-chat' stream the answer
;;   (`codellama/chatChunk' notifications) into the *codellama* buffer,
;;   in `markdown-mode' when it is installed.

;;; Code:

(require 'cl-lib)
(require 'subr-x)
(require 'jsonrpc)
(require 'eglot)

(defgroup codellama nil
  "Offline Code Llama completions and chat through eglot."
  :group 'tools
  :prefix "codellama-")

(defcustom codellama-server-command '("codellama-lsp" "serve")
  "Program and arguments that start the language server on stdio."
  :type '(repeat string))

(defcustom codellama-initialization-options nil
  "Server settings sent as `initializationOptions', a plist.
For example (:model \"demo\" :maxTokens 64 :contextTokens 2048)."
  :type 'plist)

(defcustom codellama-auto-trigger t
  "Ask for ghost text automatically after typing."
  :type 'boolean)

(defcustom codellama-debounce 0.15
  "Seconds of quiet typing before an automatic request."
  :type 'number)

(defface codellama-ghost-face '((t :inherit shadow))
  "Face of the ghost text.")

(defclass codellama-eglot-server (eglot-lsp-server) ()
  :documentation "Eglot connection to `codellama-lsp' (adds its notifications).")

(defvar codellama-status nil
  "Plist of the last `codellama/status' notification (:state :model :total_ms ...).")

;;;; Starting the server

(defun codellama--contact (&optional _interactive)
  "Eglot contact for `codellama-lsp'."
  `(codellama-eglot-server ,@codellama-server-command
                           :initializationOptions
                           ,(lambda (_server)
                              (or codellama-initialization-options (make-hash-table)))))

;;;###autoload
(defun codellama-setup (modes)
  "Use `codellama-lsp' as the eglot server for the major MODES.
Ghost text is turned on in the buffers it manages.  Eglot runs one server
per buffer: these modes then get Code Llama instead of another server."
  (dolist (mode modes)
    (setq eglot-server-programs
          (cons (cons mode #'codellama--contact)
                (assq-delete-all mode eglot-server-programs))))
  (add-hook 'eglot-managed-mode-hook #'codellama--maybe-enable))

(defun codellama--maybe-enable ()
  (when (and (eglot-current-server) (cl-typep (eglot-current-server) 'codellama-eglot-server))
    (codellama-mode (if (bound-and-true-p eglot--managed-mode) 1 -1))))

(defun codellama--server ()
  (let ((s (eglot-current-server)))
    (unless (and s (cl-typep s 'codellama-eglot-server))
      (user-error "No codellama-lsp server for this buffer (M-x eglot)"))
    s))

;;;; Notifications from the server

(cl-defmethod eglot-handle-notification
  ((_server codellama-eglot-server) (_method (eql codellama/status)) &rest params)
  (setq codellama-status (append params codellama-status))
  (force-mode-line-update t))

(cl-defmethod eglot-handle-notification
  ((_server codellama-eglot-server) (_method (eql codellama/chatChunk))
   &key conversationId seq text &allow-other-keys)
  (codellama--chunk conversationId seq text))

(defvar codellama--messages nil "Informational messages from the server, newest first (`codellama-doctor').")

(cl-defmethod eglot-handle-notification
  ((_server codellama-eglot-server) (_method (eql window/showMessage)) &key type message &allow-other-keys)
  "Errors and warnings as eglot shows them; an informational MESSAGE on one line (whole in the doctor)."
  (if (and (numberp type) (<= type 2))
      (cl-call-next-method)
    (push message codellama--messages)
    (let ((line (replace-regexp-in-string "[ \t\n]+" " " (or message ""))))
      (message "%s" (truncate-string-to-width line (max 20 (- (frame-width) 2)) nil nil
                                              "… (M-x codellama-doctor)")))))

(defun codellama--completion-ms ()
  "The latest completion latency in ms (chat answers are counted apart), or nil."
  (let ((ms (plist-get codellama-status :last_completion_ms)))
    (cond ((numberp ms) ms)
          ;; a server from before last_completion_ms
          ((and (not (plist-member codellama-status :last_completion_ms))
                (not (equal (plist-get codellama-status :source) "chat")))
           (let ((total (plist-get codellama-status :total_ms))) (and (numberp total) total))))))

(defun codellama-mode-line ()
  "Short server state for the mode line: the state, or the last completion's latency."
  (let ((state (plist-get codellama-status :state))
        (ms (codellama--completion-ms)))
    (cond ((and (equal state "ready") (numberp ms)) (format " CL:%dms" ms))
          (state (format " CL:%s" state))
          (t " CL"))))

;;;; Ghost text

(defvar-local codellama--overlay nil "Overlay showing the ghost text.")
(defvar-local codellama--items nil "Suggestions: list of (TEXT . TAIL-END) for the point they were made at.")
(defvar-local codellama--index 0)
(defvar-local codellama--timer nil)
(defvar-local codellama--request-id nil "Id of the request in flight, to cancel it.")

(defvar codellama-ghost-map
  (let ((m (make-sparse-keymap)))
    (define-key m (kbd "TAB") #'codellama-accept)
    (define-key m (kbd "<tab>") #'codellama-accept)
    (define-key m (kbd "M-f") #'codellama-accept-word)
    (define-key m (kbd "C-e") #'codellama-accept-line)
    (define-key m (kbd "M-n") #'codellama-next)
    (define-key m (kbd "M-p") #'codellama-previous)
    (define-key m (kbd "C-g") #'codellama-dismiss)
    m)
  "Keys active while ghost text is shown.")

(define-minor-mode codellama--ghost-active-mode
  "Internal: on while ghost text is shown, so its keys take precedence."
  :keymap codellama-ghost-map)

(defun codellama-visible-p ()
  "Non-nil when ghost text is shown."
  (and codellama--overlay (overlay-buffer codellama--overlay)))

(defun codellama-ghost-text ()
  "The ghost text shown at point, or nil."
  (when (codellama-visible-p)
    (substring-no-properties (overlay-get codellama--overlay 'after-string))))

(defun codellama-dismiss ()
  "Hide the ghost text and cancel any request in flight."
  (interactive)
  (codellama--cancel)
  (when codellama--overlay (delete-overlay codellama--overlay))
  (setq codellama--overlay nil codellama--items nil codellama--index 0)
  (codellama--ghost-active-mode -1))

(defun codellama--cancel ()
  (when codellama--timer (cancel-timer codellama--timer) (setq codellama--timer nil))
  (when codellama--request-id
    (let ((server (eglot-current-server)))
      (when server
        (ignore-errors (jsonrpc-notify server :$/cancelRequest (list :id codellama--request-id)))))
    (setq codellama--request-id nil)))

(defun codellama--render ()
  (let* ((item (nth codellama--index codellama--items))
         (text (copy-sequence (car item))))
    (when codellama--overlay (delete-overlay codellama--overlay))
    (add-face-text-property 0 (length text) 'codellama-ghost-face nil text)
    ;; The cursor stays before the ghost text.
    (put-text-property 0 1 'cursor t text)
    (setq codellama--overlay (make-overlay (point) (point) nil nil nil))
    (overlay-put codellama--overlay 'after-string text)
    (overlay-put codellama--overlay 'codellama t)
    (codellama--ghost-active-mode 1)))

(defun codellama--normalize (item)
  "(TEXT . TAIL-END) for ITEM at point, or nil when it does not fit the buffer.
TEXT is what goes after point; TAIL-END is where the text it replaces ends."
  (let* ((insert (plist-get item :insertText))
         (insert (if (stringp insert) insert (plist-get insert :value)))
         (range (plist-get item :range))
         (start (if range (eglot--lsp-position-to-point (plist-get range :start)) (point)))
         (end (if range (eglot--lsp-position-to-point (plist-get range :end)) (point)))
         (typed (buffer-substring-no-properties (min start (point)) (point))))
    (when (and (stringp insert) (<= start (point)) (string-prefix-p typed insert)
               (> (length insert) (length typed)))
      (cons (substring insert (length typed)) (max end (point))))))

(defun codellama-complete (&optional automatic callback)
  "Ask the server for ghost text at point.
AUTOMATIC marks the request as typing-triggered.  CALLBACK, if given, is
called with the list of suggestions once they are shown."
  (interactive)
  (let* ((server (codellama--server))
         (buffer (current-buffer))
         (pos (point))
         (tick (buffer-chars-modified-tick))
         (params (append (eglot--TextDocumentPositionParams)
                         (list :context (list :triggerKind (if automatic 2 1))))))
    (codellama--cancel)
    ;; Send pending edits first: the server must see what we see.
    (eglot--signal-textDocument/didChange)
    (let ((id (car (jsonrpc-async-request
                    server :textDocument/inlineCompletion params
                    :success-fn
                    (lambda (result)
                      (when (buffer-live-p buffer)
                        (with-current-buffer buffer
                          (setq codellama--request-id nil)
                          (when (and (= (point) pos) (= (buffer-chars-modified-tick) tick))
                            (let* ((items (append (if (vectorp result) result (plist-get result :items)) nil))
                                   (sugs (delq nil (mapcar #'codellama--normalize items))))
                              (when sugs
                                (setq codellama--items sugs codellama--index 0)
                                (codellama--render))
                              (when callback (funcall callback sugs)))))))
                    :error-fn (lambda (_err) (with-current-buffer buffer (setq codellama--request-id nil)))
                    ;; jsonrpc's default (10 s) is shorter than a slow CPU's completion.
                    :timeout 60 :timeout-fn #'ignore))))
      (setq codellama--request-id id))))

(defun codellama--accept (piece)
  "Insert PIECE, a prefix of the shown suggestion; keep showing the rest."
  (let* ((item (nth codellama--index codellama--items))
         (text (car item))
         (whole (string= piece text))
         (tail-end (cdr item)))
    (codellama-dismiss)
    (when whole (delete-region (point) (min tail-end (point-max))))
    (insert piece)
    (unless whole
      ;; The replaced tail moved right by what was inserted.
      (setq codellama--items (list (cons (substring text (length piece)) (+ tail-end (length piece))))
            codellama--index 0)
      (codellama--render))))

(defun codellama-accept ()
  "Accept the whole suggestion."
  (interactive)
  (if (codellama-visible-p)
      (codellama--accept (car (nth codellama--index codellama--items)))
    (codellama--fallback-key)))

(defun codellama-accept-line ()
  "Accept the suggestion up to its first line break."
  (interactive)
  (if (not (codellama-visible-p))
      (codellama--fallback-key)
    (let* ((text (car (nth codellama--index codellama--items)))
           (nl (string-match "\n" text (if (string-prefix-p "\n" text) 1 0))))
      (codellama--accept (if nl (substring text 0 nl) text)))))

(defun codellama-accept-word ()
  "Accept the suggestion's next word."
  (interactive)
  (if (not (codellama-visible-p))
      (codellama--fallback-key)
    (let ((text (car (nth codellama--index codellama--items))))
      (codellama--accept
       (if (string-match "\\`[ \t\n]*\\(?:\\sw\\|\\s_\\)+\\|\\`[ \t\n]*[^ \t\n[:alnum:]_]+\\|\\`[ \t\n]+" text)
           (match-string 0 text)
         text)))))

(defun codellama-next (&optional n)
  "Show the next suggestion (or the Nth next).
With one suggestion shown (typing asks for one), ask the server explicitly:
that request gets the alternatives, and the next one is shown."
  (interactive)
  (if (and (codellama-visible-p) (cdr codellama--items))
      (progn
        (setq codellama--index (mod (+ codellama--index (or n 1)) (length codellama--items)))
        (codellama--render))
    (codellama-complete nil (lambda (suggestions)
                              (when (cdr suggestions) (codellama-next n))))))

(defun codellama-previous ()
  "Show the previous suggestion."
  (interactive)
  (codellama-next -1))

(defun codellama--fallback-key ()
  "Run what the key would do without ghost text."
  (let* ((codellama--ghost-active-mode nil)
         (cmd (key-binding (this-command-keys-vector) t)))
    (when (commandp cmd) (call-interactively cmd))))

(defun codellama--post-command ()
  (unless (memq this-command '(codellama-accept codellama-accept-line codellama-accept-word
                               codellama-next codellama-previous codellama-complete))
    (when (codellama-visible-p)
      (unless (= (point) (overlay-start codellama--overlay)) (codellama-dismiss)))
    (when (and codellama-auto-trigger
               (memq this-command '(self-insert-command newline indent-for-tab-command
                                    delete-backward-char backward-delete-char-untabify)))
      (codellama-dismiss)
      (let ((buffer (current-buffer)))
        ;; A plain timer (not an idle timer) so that it also fires under `accept-process-output'.
        (setq codellama--timer
              (run-with-timer codellama-debounce nil
                              (lambda ()
                                (when (buffer-live-p buffer)
                                  (with-current-buffer buffer
                                    (setq codellama--timer nil)
                                    (when (eq (window-buffer (selected-window)) buffer)
                                      (ignore-errors (codellama-complete t))))))))))))

;;;###autoload
(define-minor-mode codellama-mode
  "Ghost-text completions from `codellama-lsp' in this eglot-managed buffer."
  :lighter (:eval (codellama-mode-line))
  (if codellama-mode
      (add-hook 'post-command-hook #'codellama--post-command nil t)
    (remove-hook 'post-command-hook #'codellama--post-command t)
    (codellama-dismiss)))

;;;; Explain and chat

;; Each answer owns a section of *codellama*: a start and an end marker.  A stream only ever replaces the
;; text between its own markers, so an Explain and a chat streaming at the same time never write into
;; each other's place.  Killing the buffer cancels what still streams into it.

(cl-defstruct (codellama--sec (:constructor codellama--sec-create))
  start end chunks server request done on-kill)

(defvar codellama--conversations (make-hash-table :test #'equal)
  "conversationId -> `codellama--sec' of the answer streaming (or shown) for it.")
(defvar codellama--pending nil "Sections of Explains waiting for their conversation id, oldest first.")
(defvar codellama--chat-history nil "Messages of the chat conversation, oldest first.")
(defvar codellama--chat-id nil)
(defvar codellama-last-answer nil "Plist (:conversationId :text :streamed) of the last finished answer.")

(defun codellama--output-buffer ()
  (let ((buf (get-buffer-create "*codellama*")))
    (with-current-buffer buf
      (unless (derived-mode-p 'markdown-mode 'text-mode)
        (if (fboundp 'markdown-mode) (markdown-mode) (text-mode)))
      (add-hook 'kill-buffer-hook #'codellama--output-killed nil t))
    (display-buffer buf)
    buf))

(defun codellama--begin (heading)
  "Append HEADING to *codellama*; return a new section for the answer under it."
  (with-current-buffer (codellama--output-buffer)
    (let ((inhibit-read-only t))
      (goto-char (point-max))
      (unless (bobp) (insert "\n"))
      (insert heading "\n\n")
      (codellama--sec-create :start (copy-marker (point) nil) :end (copy-marker (point) nil)))))

(defun codellama--live-p (section)
  (let ((m (codellama--sec-start section)))
    (and m (marker-buffer m) (buffer-live-p (marker-buffer m)))))

(defun codellama--output-killed ()
  "*codellama* is being killed: cancel the answers still streaming into it."
  (maphash (lambda (_id section)
             (when (and (not (codellama--sec-done section))
                        (eq (marker-buffer (codellama--sec-start section)) (current-buffer)))
               (codellama--abandon section)))
           codellama--conversations)
  (dolist (section codellama--pending) (codellama--abandon section))
  (setq codellama--pending nil))

(defun codellama--abandon (section)
  "Stop streaming into SECTION: cancel its request and let its owner keep the conversation consistent."
  (unless (codellama--sec-done section)
    (setf (codellama--sec-done section) 'cancelled)
    (let ((server (codellama--sec-server section)) (id (codellama--sec-request section)))
      (when (and server id (jsonrpc-running-p server))
        (ignore-errors (jsonrpc-notify server :$/cancelRequest (list :id id)))))
    (when (codellama--sec-on-kill section)
      (funcall (codellama--sec-on-kill section) (codellama--streamed section)))))

(defun codellama--section (id)
  (or (gethash id codellama--conversations)
      (puthash id (or (pop codellama--pending) (codellama--begin "# Code Llama")) codellama--conversations)))

(defun codellama--show (section text)
  "Replace SECTION's text with TEXT (nothing when its buffer is gone)."
  (when (codellama--live-p section)
    (let ((start (codellama--sec-start section)) (end (codellama--sec-end section)))
      (with-current-buffer (marker-buffer start)
        (let ((inhibit-read-only t))
          (save-excursion
            (delete-region start end)
            (goto-char start)
            (insert text)
            (set-marker end (point))))))))

(defun codellama--streamed (section)
  (mapconcat #'cdr (sort (copy-sequence (codellama--sec-chunks section)) (lambda (a b) (< (car a) (car b)))) ""))

(defun codellama--chunk (id seq text)
  (let ((section (codellama--section id)))
    (unless (or (codellama--sec-done section) (assq seq (codellama--sec-chunks section)))
      (push (cons seq (or text "")) (codellama--sec-chunks section))
      (codellama--show section (codellama--streamed section)))))

(defun codellama--finish (id text)
  (let ((section (codellama--section id)))
    (unless (codellama--sec-done section)
      (setf (codellama--sec-done section) t)
      (codellama--show section text))
    (setq codellama-last-answer (list :conversationId id :text text :streamed (codellama--streamed section)))
    text))

(defun codellama-explain (beg end &optional callback)
  "Explain the region BEG..END (the current line without a region).
CALLBACK, if given, is called with the answer text."
  (interactive (if (use-region-p) (list (region-beginning) (region-end))
                 (list (line-beginning-position) (line-end-position))))
  (let* ((server (codellama--server))
         (name (buffer-name))
         (lines (format "%d-%d" (line-number-at-pos beg) (line-number-at-pos end)))
         (args (vector (eglot--path-to-uri buffer-file-name)
                       (list :start (eglot--pos-to-lsp-position beg) :end (eglot--pos-to-lsp-position end))
                       (eglot--VersionedTextDocumentIdentifier))))
    (eglot--signal-textDocument/didChange)
    (aset args 2 (plist-get (aref args 2) :version))
    (let ((section (codellama--begin (format "# Explain %s:%s" name lines))))
      (setq codellama--pending (append codellama--pending (list section)))
      (setq codellama-last-answer nil)
      (setf (codellama--sec-server section) server
            (codellama--sec-request section)
            (car (jsonrpc-async-request
                  server :workspace/executeCommand (list :command "codellama.explain" :arguments args)
                  :success-fn (lambda (result)
                                (setq codellama--pending (delq section codellama--pending))
                                (let* ((id (or (plist-get result :conversationId) "explain"))
                                       (_ (unless (gethash id codellama--conversations)
                                            (puthash id section codellama--conversations)))
                                       (text (codellama--finish id (or (plist-get result :text) ""))))
                                  (when callback (funcall callback text))))
                  :error-fn (lambda (err)
                              (setq codellama--pending (delq section codellama--pending))
                              (setq codellama-last-answer (list :error (plist-get err :message)))
                              (unless (codellama--sec-done section)
                                (message "codellama: %s" (plist-get err :message))))
                  :timeout nil)))  ; long answers: no jsonrpc timeout
      section)))

(defun codellama--chat-answered (id text)
  "Record the assistant's TEXT for the question last asked in conversation ID (once)."
  (when (and (equal id codellama--chat-id)
             (equal (plist-get (car (last codellama--chat-history)) :role) "user"))
    (setq codellama--chat-history
          (append codellama--chat-history (list (list :role "assistant" :content text))))))

(defun codellama--chat-dropped (id)
  "The question last asked in ID got no answer: take it out, so the history still alternates."
  (when (and (equal id codellama--chat-id)
             (equal (plist-get (car (last codellama--chat-history)) :role) "user"))
    (setq codellama--chat-history (butlast codellama--chat-history))))

(defun codellama-chat (question)
  "Ask QUESTION; the conversation keeps its history.
With a prefix argument, start a new conversation."
  (interactive "sCode Llama> ")
  (when (or current-prefix-arg (null codellama--chat-id))
    (setq codellama--chat-id (format "emacs-%d-%s" (emacs-pid) (format-time-string "%s%N"))
          codellama--chat-history nil))
  (let* ((server (codellama--server))
         (id codellama--chat-id)
         (previous (gethash id codellama--conversations)))
    (when (and previous (not (codellama--sec-done previous)))
      (codellama--abandon previous))  ; a new question replaces one still being answered
    (setq codellama--chat-history (append codellama--chat-history (list (list :role "user" :content question))))
    (let ((section (codellama--begin (concat "## You\n" question "\n\n## Code Llama"))))
      (puthash id section codellama--conversations)
      (setf (codellama--sec-server section) server
            (codellama--sec-on-kill section)
            (lambda (partial)
              ;; The user saw PARTIAL: keep it as the answer, or drop the question if nothing came.
              (if (string-empty-p partial) (codellama--chat-dropped id) (codellama--chat-answered id partial)))
            (codellama--sec-request section)
            (car (jsonrpc-async-request
                  server :codellama/chat
                  (list :conversationId id :messages (vconcat codellama--chat-history)
                        :textDocument (eglot--TextDocumentIdentifier))
                  :success-fn (lambda (result)
                                (let ((text (or (plist-get result :text) "")))
                                  (unless (codellama--sec-done section)
                                    (puthash id section codellama--conversations)
                                    (codellama--finish id text)
                                    (codellama--chat-answered id text))))
                  :error-fn (lambda (err)
                              (unless (codellama--sec-done section)
                                (setf (codellama--sec-done section) 'failed)
                                (codellama--chat-dropped id)
                                (message "codellama: %s" (plist-get err :message))))
                  :timeout nil)))  ; long answers: no jsonrpc timeout
      section)))

;;;; Health

(defun codellama-doctor ()
  "Show what `:checkhealth codellama' shows in Neovim: the server, the model, latencies, the log."
  (interactive)
  (let* ((server (ignore-errors (codellama--server)))
         (s codellama-status)
         (program (car codellama-server-command))
         (found (and program (executable-find program))))
    (with-current-buffer (get-buffer-create "*codellama-doctor*")
      (let ((inhibit-read-only t))
        (erase-buffer)
        (insert "codellama doctor\n\n")
        (insert (format "- Emacs %s, eglot %s\n" emacs-version
                        (or (and (fboundp 'eglot--version) (ignore-errors (eglot--version)))
                            (bound-and-true-p eglot-version)
                            (let ((lib (locate-library "eglot"))) (if lib (file-name-nondirectory (directory-file-name (file-name-directory lib))) "?")))))
        (insert (if found (format "- OK: server command found: %s\n" found)
                  (format "- ERROR: server command not found: %s (install the server from its source tree: python -m pip install /path/to/codellama-lsp, or set `codellama-server-command' to (\"/path/to/venv/bin/python\" \"-m\" \"codellama_lsp.cli\" \"serve\"))\n" program)))
        (insert (if server (format "- OK: server running (%s)\n" (jsonrpc-name server))
                  "- WARNING: no codellama-lsp server for this buffer (M-x eglot in a source buffer)\n"))
        (pcase (plist-get s :state)
          ("ready" (insert (format "- OK: model ready: %s on %s (%s)\n" (plist-get s :model) (plist-get s :device)
                                   (plist-get s :quantization))))
          ("error" (insert (format "- ERROR: model failed to load: %s\n" (plist-get s :message))))
          (state (insert (format "- model state: %s %s\n" (or state "?") (or (plist-get s :message) "")))))
        (let ((ms (codellama--completion-ms)))
          (when ms (insert (format "- last completion: %d ms\n" ms))))
        (when (numberp (plist-get s :last_chat_ms))
          (insert (format "- last chat answer: %d ms\n" (plist-get s :last_chat_ms))))
        (dolist (m (reverse codellama--messages)) (insert (format "- server: %s\n" m)))
        (insert (format "- server log: %s\n" (or (plist-get s :log_file)
                                                  "~/.local/state/codellama-lsp/log/server.log")))
        (goto-char (point-min)))
      (special-mode)
      (display-buffer (current-buffer))
      (buffer-string))))

(provide 'codellama)
;;; codellama.el ends here
