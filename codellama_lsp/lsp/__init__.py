"""The protocol edge: the only package that imports pygls or lsprotocol.

Handlers parse LSP params, convert client positions to offsets (``positions``), hand plain text and
offsets to ``features/``, and turn the plain answers back into LSP types. See docs/architecture.md.
"""
