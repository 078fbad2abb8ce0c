;;; emacs_daily_driver.el --- daily-use scenarios for tests/editors/test_emacs_daily.py  -*- lexical-binding: t; -*-
;; Same inputs as emacs_driver.el, plus CODELLAMA_TEST_SCENARIO ("streams", "binary" or "loading") and,
;; for "loading", CODELLAMA_TEST_LOAD_GATE (the file whose creation lets the server's model load go on).
(setq debug-on-error nil)
(load (expand-file-name "emacs_driver_lib" (file-name-directory load-file-name)) nil t)
(setq drv-wait-survives-filter-errors t)

(defun drv-clean (text)
  "TEXT without control characters and raw bytes (a binary file's content can end up in logs)."
  (replace-regexp-in-string "[^\n\t[:print:]]\\|[\x3fff80-\x3fffff]" "?" text))

(defun drv-messages ()
  (with-current-buffer (messages-buffer) (drv-clean (buffer-substring-no-properties (point-min) (point-max)))))

(defun drv-finish (err)
  (drv-put 'error err)
  (drv-put 'messages (drv-messages))
  (when err
    (drv-put-buffer-tails "events\\*\\|stderr\\*" #'drv-clean))
  (drv-write-report))

(defun drv-ping ()
  "A round trip: everything sent before it has been handled by the server."
  (jsonrpc-request (eglot-current-server) :codellama/ping nil :timeout 60))

(defun drv-type-and-wait-for-ghost ()
  (goto-char (point-min))
  (forward-line (1- (string-to-number (getenv "CODELLAMA_TEST_LINE"))))
  (end-of-line)
  (execute-kbd-macro (getenv "CODELLAMA_TEST_TYPE"))
  (drv-wait "ghost text" 180 #'codellama-visible-p)
  (drv-step "ghost"))

(defun drv-output () (with-current-buffer "*codellama*" (buffer-substring-no-properties (point-min) (point-max))))

(defun drv-streams ()
  "Items 1, 2 and 8: Explain and chat at once; killing *codellama* mid-answer; latencies apart; doctor."
  (drv-ready)
  (drv-type-and-wait-for-ghost)
  (drv-put 'mode_line_after_completion (codellama-mode-line))
  (execute-kbd-macro (kbd "C-g"))
  (let* ((src (current-buffer))
         (explain (codellama-explain (point-min) (point-max)))
         (chat (codellama-chat "What does add do?")))
    (drv-wait "both answers" 180 (lambda () (and (eq (codellama--sec-done explain) t)
                                                 (eq (codellama--sec-done chat) t))))
    (drv-step "both answered")
    (drv-put 'explain_text (codellama--streamed explain))
    (drv-put 'chat_text (plist-get (car (last codellama--chat-history)) :content))
    (drv-put 'output_after_both (drv-output))
    (drv-put 'mode_line_after_chat (codellama-mode-line))
    (drv-put 'status_after_chat codellama-status)
    ;; Kill *codellama* as the first chunk of the next answer arrives.
    (let (killed)
      (advice-add 'codellama--chunk :after
                  (lambda (&rest _)
                    (unless killed
                      (setq killed t)
                      (kill-buffer "*codellama*")))
                  '((name . drv-kill)))
      (set-buffer src)
      (let ((streaming (codellama-chat "And mul?")))
        (drv-wait "the kill" 120 (lambda () killed))
        (advice-remove 'codellama--chunk 'drv-kill)
        (drv-step "killed")
        (drv-put 'killed_section_state (format "%s" (codellama--sec-done streaming)))))
    ;; The server cancels (or finishes) the abandoned answer; the next question must work.
    (drv-ping)
    (set-buffer src)
    (let ((after (codellama-chat "Thanks. One more: what does mul return?")) (failed nil))
      (drv-wait "the answer after the kill" 180
                (lambda () (or (eq (codellama--sec-done after) t)
                               (and (eq (codellama--sec-done after) 'failed) (setq failed t)))))
      (drv-step "answered after kill")
      (drv-put 'chat_after_kill_failed failed)
      (drv-put 'output_after_kill (drv-output)))
    (drv-put 'history (mapcar (lambda (m) (plist-get m :role)) codellama--chat-history))
    (set-buffer src)
    (drv-put 'doctor (codellama-doctor))))

(defun drv-binary ()
  "Item 6: eglot could not send a binary file named .py in didOpen (its text is not UTF-8), then sends
each edit of it as didChange.  Batch Emacs stops at the failed didOpen, so the didChange is sent as eglot
sends it, for the file next to the one opened."
  (drv-ready)
  (let ((blob (expand-file-name "blob.py" (file-name-directory (buffer-file-name)))))
    (dotimes (i 3)
      (jsonrpc-notify (eglot-current-server) :textDocument/didChange
                      (list :textDocument (list :uri (eglot--path-to-uri blob) :version (+ i 1))
                            :contentChanges (vector (list :range (list :start (list :line 0 :character 0)
                                                                       :end (list :line 0 :character 0))
                                                          :rangeLength 0 :text "x"))))))
  (drv-ping)
  (drv-step "edited")
  (drv-put 'events (with-current-buffer (seq-find (lambda (b) (string-match-p "events\\*" (buffer-name b)))
                                                  (buffer-list))
                     (drv-clean (buffer-substring-no-properties (point-min) (point-max))))))

(defun drv-loading ()
  "Item 3: a keystroke while the model loads is answered when it is loaded."
  (drv-wait "the model to start loading" 120
            (lambda () (equal (plist-get codellama-status :state) "loading")))
  (drv-step "loading")
  (let ((requests 0))
    (advice-add 'codellama-complete :before (lambda (&rest _) (setq requests (1+ requests)))
                '((name . drv-count)))
    (goto-char (point-min))
    (forward-line (1- (string-to-number (getenv "CODELLAMA_TEST_LINE"))))
    (end-of-line)
    (execute-kbd-macro (getenv "CODELLAMA_TEST_TYPE"))
    (drv-wait "the request" 60 (lambda () (> requests 0)))
    (drv-put 'state_at_request (plist-get codellama-status :state))
    (with-temp-file (getenv "CODELLAMA_TEST_LOAD_GATE") (insert "go"))
    (drv-wait "ghost text" 180 #'codellama-visible-p)
    (drv-step "ghost")
    (drv-put 'requests requests)
    (drv-put 'ghost (codellama-ghost-text))))

(condition-case err
    (progn
      (drv-put 'emacs emacs-version)
      (drv-open-file)
      (condition-case e (apply #'eglot (eglot--guess-contact))
        (error (message "error in process filter: %s" (truncate-string-to-width (format "%S" e) 200))))
      (drv-step "connected")
      (funcall (intern (concat "drv-" (getenv "CODELLAMA_TEST_SCENARIO"))))
      (drv-finish nil))
  (error (drv-finish (format "%S" err))))
