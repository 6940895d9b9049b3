"""How the docs runner reads a page (tests/support/doc_examples.py): which blocks are examples,
where a shell command ends, and what `...` in a shown output matches. Pure text: the examples
themselves run in tests/integration/test_docs_examples.py."""

from __future__ import annotations

from pathlib import Path

from tests.support.doc_examples import Block, addressed, blocks, commands, output_matches


def test_a_block_is_an_example_only_under_a_marker(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text("text\n\n<!-- run -->\n```sh\n$ true\n```\n\n```sh\n$ false\n```\n"
                    "<!-- not run: no Go here -->\n```go\nx := 1\n```\n")
    found = blocks(page)
    assert [(b.lang, b.marker) for b in found] == [
        ("sh", "<!-- run -->"), ("sh", None), ("go", "<!-- not run: no Go here -->")]
    assert found[0].line == 4 and found[0].text == "$ true\n"


def test_a_command_runs_on_until_its_quotes_close_and_a_heredoc_to_its_end():
    text = ("$ grpcurl -d '{\"a\": [\n  1]}' host rpc\n{\"ok\": true}\n"
            "$ cat <<'END'\nline\nEND\nline\n$ echo a \\\n  b\n")
    found = commands(Block(Path("p.md"), 1, "sh", text, "<!-- run -->"))
    assert [(c.text, c.shown) for c in found] == [
        ("grpcurl -d '{\"a\": [\n  1]}' host rpc", '{"ok": true}'),
        ("cat <<'END'\nline\nEND", "line"),
        ("echo a \\\n  b", "")]


def test_examples_are_aimed_at_the_pages_server():
    assert addressed("grpcurl -plaintext localhost:50051 list", 4321) == (
        "grpcurl -plaintext 127.0.0.1:4321 list")
    assert addressed("batchd ingest f.csv --table t", 4321) == (
        "batchd ingest --target 127.0.0.1:4321 f.csv --table t")


def test_json_is_compared_as_json_with_cuts():
    actual = '{\n  "results": [{"id": "a", "rows": [], "columns": [1]}],\n  "committed": true\n}'
    assert output_matches('{"results": [{"id": "a", "rows": [], "...": "..."}], "committed": true}',
                          actual)
    assert not output_matches('{"results": [{"id": "a", "rows": []}], "committed": true}', actual)
    assert output_matches('{"results": ["..."], "committed": true}', actual)
    assert not output_matches('{"results": ["..."], "committed": false}', actual)
    assert output_matches('{"m": "dup..."}', '{"m": "duplicate key"}')
    assert output_matches('{"a": 1}\n{"b": 2}', '{"a": 1}{"b": 2}')
    assert not output_matches('{"a": 1}', '{"a": 1}\n{"b": 2}')


def test_text_is_compared_line_by_line_with_cuts():
    actual = "ERROR:\n  Code: NotFound\n  Message: no row 404\n  Details:\n  1) {}\n"
    assert output_matches("ERROR:\n  Code: NotFound\n  Message: ...\n...", actual)
    assert not output_matches("ERROR:\n  Code: AlreadyExists\n...", actual)
    assert output_matches("done in ...s", "done in 0.4s\n")
    assert not output_matches("done in ...s", "done in 0.4s\nand more\n")
    assert output_matches("", "anything: nothing is shown")
