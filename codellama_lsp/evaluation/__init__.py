"""Evaluation harnesses: HumanEval-infilling driven through the real language server.

Submodules, one job each: ``dataset`` (read the task files), ``sandbox`` (run untrusted programs),
``scoring`` (pass@1, exact match, latency percentiles), ``report`` (JSON and markdown), ``lsp_driver``
(talk to ``codellama-lsp serve`` over stdio) and ``fim`` (the command line that ties them together).
"""
