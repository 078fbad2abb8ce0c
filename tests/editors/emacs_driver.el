;;; emacs_driver.el --- drives Emacs in batch for tests/editors/test_emacs_e2e.py  -*- lexical-binding: t; -*-
;; Keys go through `execute-kbd-macro', so commands, keymaps and `post-command-hook' run as when typed.
;; Input: CODELLAMA_TEST_LISP (editors/emacs), CODELLAMA_TEST_CMD / CODELLAMA_TEST_SETTINGS (JSON),
;; CODELLAMA_TEST_FILE, CODELLAMA_TEST_LINE (1-based), CODELLAMA_TEST_TYPE; output: CODELLAMA_TEST_OUT (JSON).
(load (expand-file-name "emacs_driver_lib" (file-name-directory load-file-name)) nil t)

(defun drv-finish (err)
  (drv-put 'error err)
  (when err
    ;; Eglot's JSON-RPC log and the server's stderr explain most failures.
    (drv-put-buffer-tails "events\\*\\|stderr\\*\\|\\*Messages" #'identity))
  (drv-write-report))

(condition-case err
    (progn
      (drv-put 'emacs emacs-version)
      (drv-put 'eglot (if (fboundp 'eglot-version) (eglot-version) (bound-and-true-p eglot-version)))
      (drv-open-file)
      ;; `eglot-ensure' waits for an idle command loop, which batch mode never has.
      (apply #'eglot (eglot--guess-contact))
      (drv-step "connected")
      (drv-ready)
      (drv-put 'codellama_mode codellama-mode)
      (goto-char (point-min))
      (forward-line (1- (string-to-number (getenv "CODELLAMA_TEST_LINE"))))
      (end-of-line)
      (execute-kbd-macro (getenv "CODELLAMA_TEST_TYPE"))
      (drv-wait "ghost text" 60 #'codellama-visible-p)
      (drv-step "ghost")
      ;; "next" (M-n): typing got one suggestion, so the package asks for the alternatives and shows the
      ;; next one; further presses cycle through them and back to the first.
      (let ((cycle (list (codellama-ghost-text))))
        (execute-kbd-macro (kbd "M-n"))
        (drv-wait "the next suggestion" 120 (lambda () (and (codellama-visible-p) (cdr codellama--items)
                                                            (= codellama--index 1))))
        (push (codellama-ghost-text) cycle)
        (drv-put 'cycle_items (length codellama--items))
        (dotimes (_ (1- (length codellama--items)))
          (execute-kbd-macro (kbd "M-n"))
          (push (codellama-ghost-text) cycle))
        (drv-put 'cycle (vconcat (nreverse cycle))))
      (drv-step "cycled")
      (drv-put 'ghost (codellama-ghost-text))
      (drv-put 'ghost_at (1- (overlay-start codellama--overlay)))
      (drv-put 'overlays (length (seq-filter (lambda (o) (overlay-get o 'codellama))
                                             (overlays-in (point-min) (point-max)))))
      (drv-put 'point_before (1- (point)))
      (drv-put 'text_before (drv-buffer-text))
      ;; The same request, straight to the server.
      (drv-put 'direct (jsonrpc-request (eglot-current-server) :textDocument/inlineCompletion
                                        (append (eglot--TextDocumentPositionParams)
                                                (list :context (list :triggerKind 1)))
                                        :timeout 120))
      (execute-kbd-macro (kbd "TAB"))
      (drv-step "accepted")
      (drv-put 'point_after (1- (point)))
      (drv-put 'text_after (drv-buffer-text))
      (drv-put 'ghost_after_accept (codellama-ghost-text))
      (let (answer)
        (codellama-explain (point-min) (point-max) (lambda (text) (setq answer (list text))))
        (drv-wait "the explanation" 120 (lambda () (or answer (plist-get codellama-last-answer :error)))))
      (drv-step "explained")
      (drv-put 'explain codellama-last-answer)
      (with-current-buffer "*codellama*"
        (drv-put 'explain_buffer (drv-buffer-text))
        (drv-put 'explain_mode (symbol-name major-mode)))
      (drv-finish nil))
  (error (drv-finish (format "%S" err))))
