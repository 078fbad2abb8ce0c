"""The log file keeps source code out unless the user asked for it (``log_document_text``)."""

from __future__ import annotations

import logging

import pytest

from codellama_lsp.logs import document_text, set_level, setup_logging

SECRET = "def private_algorithm(): return 42"


@pytest.fixture()
def log_path(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers), root.level
    path = setup_logging("info", log_file=tmp_path / "logs" / "server.log")
    yield path
    for handler in [h for h in root.handlers if h not in before[0]]:
        root.removeHandler(handler)
        handler.close()
    root.setLevel(before[1])
    set_level("info", log_document_text=False)


def flush() -> None:
    for handler in logging.getLogger().handlers:
        handler.flush()


def test_the_log_file_is_created_and_written(log_path):
    logging.getLogger("codellama_lsp.lsp.server").info("model ready")
    flush()
    assert "model ready" in log_path.read_text()


def test_message_bodies_logged_by_pygls_are_redacted(log_path):
    logging.getLogger("pygls.protocol").warning("Failed to handle request %s", {"text": SECRET})
    logging.getLogger("codellama_lsp.lsp.server").info("completion: %s", document_text(SECRET))
    flush()
    content = log_path.read_text()
    assert SECRET not in content
    assert "Failed to handle request {'text': '<str>'}" in content and f"<{len(SECRET)} characters>" in content
    logging.getLogger("pygls.protocol").warning("params %s", SECRET)
    flush()
    assert SECRET not in log_path.read_text()


def test_third_party_lines_keep_ids_instead_of_placeholders(log_path):
    logging.getLogger("pygls.protocol").warning('Cancel notification for unknown message id "%s"', 17)
    logging.getLogger("pygls.protocol").error('Exception occurred for message "%s"', "a1b2-c3")
    flush()
    content = log_path.read_text()
    assert 'unknown message id "17"' in content and 'for message "a1b2-c3"' in content
    assert '"%s"' not in content


def test_document_text_is_logged_when_the_user_turns_it_on(log_path):
    set_level("debug", log_document_text=True)
    logging.getLogger("codellama_lsp.lsp.server").debug("completion: %s", document_text(SECRET))
    logging.getLogger("pygls.protocol").warning("params %s", SECRET)
    flush()
    assert log_path.read_text().count(SECRET) == 2
