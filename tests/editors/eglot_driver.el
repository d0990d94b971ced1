;;; eglot_driver.el --- drive codegen-lsp through Emacs' eglot in `emacs --batch' -*- lexical-binding: t -*-
;; Used by tests/editors/test_emacs.py. Environment: CODEGEN_PY (the Python with codegen_lsp),
;; CODEGEN_SETTINGS (the `codegen' settings, JSON), CODEGEN_FILE (a Python file with a function
;; stub on its first line and a line to complete last), CODEGEN_ANSWER ("yes" or "no": the answer
;; to eglot's "Proceed?" before the generated edit), CODEGEN_OUT (where the results go, JSON).
(require 'cl-lib)
(require 'json)
(require 'eglot)

(defun codegen-drv--wait-ready (server)
  "Ask `codegen/status' until the model is ready; the last status."
  (let (status)
    (with-timeout (240 (error "codegen-lsp: model not ready: %S" status))
      (while (not (equal (plist-get (setq status (jsonrpc-request server :codegen/status nil))
                                    :state)
                         "ready"))
        (accept-process-output nil 0.2)))
    status))

(let* ((settings (json-parse-string (getenv "CODEGEN_SETTINGS") :object-type 'plist
                                    :false-object :json-false))
       (answer (getenv "CODEGEN_ANSWER"))
       (results nil))
  (setq eglot-server-programs
        `((python-mode ,(getenv "CODEGEN_PY") "-m" "codegen_lsp" "serve"
                       :initializationOptions (:codegen ,settings))))
  (find-file (getenv "CODEGEN_FILE"))
  (python-mode)
  (let ((eglot-sync-connect t)) (call-interactively #'eglot))
  (let ((server (eglot-current-server)))
    (codegen-drv--wait-ready server)
    ;; completion at the end of the last line, through eglot's completion table
    (goto-char (point-max))
    (skip-chars-backward "\n")
    (let* ((capf (eglot-completion-at-point))
           (items (all-completions "" (nth 2 capf))))
      (push (cons 'completions (vconcat items)) results))
    ;; hover and the code action on the stub's name
    (goto-char (point-min))
    (search-forward "def ")
    (let ((hover (jsonrpc-request server :textDocument/hover
                                  (eglot--TextDocumentPositionParams))))
      (push (cons 'hover (or (plist-get (plist-get hover :contents) :value) "")) results))
    (let* ((actions (eglot-code-actions (point) (point)))
           (action (car actions))
           (command (plist-get action :command)))
      (push (cons 'actions (vconcat (mapcar (lambda (a) (plist-get a :title)) actions))) results)
      (cl-letf (((symbol-function 'y-or-n-p) (lambda (&rest _) (equal answer "yes"))))
        (push (cons 'executed
                    (condition-case err
                        (jsonrpc-request server :workspace/executeCommand
                                         (list :command (plist-get command :command)
                                               :arguments (plist-get command :arguments)))
                      (error (list :error (format "%S" err)))))
              results)))
    (push (cons 'text (buffer-substring-no-properties (point-min) (point-max))) results)
    (ignore-errors (eglot-shutdown server)))
  (with-temp-file (getenv "CODEGEN_OUT")
    (insert (json-encode results))))
;;; eglot_driver.el ends here
