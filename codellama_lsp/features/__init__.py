"""What the server offers, without the protocol: completion, post-processing, code actions, chat, edits.

Text and character offsets in, plain data out: nothing here imports ``lsp/``, pygls or lsprotocol
(tests/test_layering.py checks it).
"""
