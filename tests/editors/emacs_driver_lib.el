;;; emacs_driver_lib.el --- what both Emacs test drivers need  -*- lexical-binding: t; -*-
;; Loaded first by emacs_driver.el and emacs_daily_driver.el: the package on the load path, a JSON report
;; with timed steps written once at the end, waiting on a condition while processing events, and the
;; start of a session (server command and settings from the environment, eglot connected).
(require 'json)
(require 'seq)
(add-to-list 'load-path (getenv "CODELLAMA_TEST_LISP"))
(require 'codellama)

(defvar drv-report (list (cons 'steps nil)))
(defvar drv-t0 (float-time))
(defvar drv-wait-survives-filter-errors nil
  "Non-nil: an error in a process filter while waiting is logged and waiting goes on, as interactive Emacs does.")

(defun drv-put (key value) (setq drv-report (cons (cons key value) drv-report)))
(defun drv-step (name)
  (setcdr (assq 'steps drv-report)
          (append (cdr (assq 'steps drv-report)) (list (format "%s@%.1fs" name (- (float-time) drv-t0))))))

(defun drv-put-buffer-tails (regexp clean)
  "Put the last 6000 characters of every buffer whose name matches REGEXP, passed through CLEAN."
  (dolist (b (buffer-list))
    (when (string-match-p regexp (buffer-name b))
      (with-current-buffer b
        (drv-put (intern (buffer-name b))
                 (funcall clean (buffer-substring-no-properties (max (point-min) (- (point-max) 6000)) (point-max))))))))

(defun drv-write-report ()
  "Write the report to CODELLAMA_TEST_OUT and leave Emacs."
  (with-temp-file (getenv "CODELLAMA_TEST_OUT")
    (setq buffer-file-coding-system 'utf-8-unix)
    (insert (json-encode drv-report)))
  (kill-emacs 0))

(defun drv-wait (what seconds pred)
  "Process events until PRED is non-nil; give up (`drv-finish') after SECONDS."
  (let ((deadline (+ (float-time) seconds)) v)
    (while (and (not (setq v (funcall pred))) (< (float-time) deadline))
      (if drv-wait-survives-filter-errors
          ;; Interactive Emacs reports an error in a process filter and goes on; batch Emacs throws it here.
          (condition-case e (accept-process-output nil 0.05)
            (error (message "error in process filter: %s" (truncate-string-to-width (format "%S" e) 200))))
        (accept-process-output nil 0.05)))
    (unless v (drv-finish (format "timed out waiting for %s" what)))
    v))

(defun drv-ready ()
  (drv-wait "the model to be ready" 180
            (lambda ()
              (when (equal (plist-get codellama-status :state) "error")
                (drv-finish (format "server error: %s" (plist-get codellama-status :message))))
              (equal (plist-get codellama-status :state) "ready")))
  (drv-step "ready"))

(defun drv-open-file ()
  "Set the package up from the environment and open CODELLAMA_TEST_FILE in `python-mode'."
  (setq codellama-server-command (append (json-parse-string (getenv "CODELLAMA_TEST_CMD")) nil)
        codellama-initialization-options
        (json-parse-string (getenv "CODELLAMA_TEST_SETTINGS") :object-type 'plist)
        codellama-debounce 0.05)
  (codellama-setup '(python-mode))
  (find-file (getenv "CODELLAMA_TEST_FILE"))
  (python-mode))

(defun drv-buffer-text () (buffer-substring-no-properties (point-min) (point-max)))
