"""The batch tools' frame (order, rejects, exit codes) and citystream mask / analyse, with
hostile lines."""

from __future__ import annotations

import io
import json

import pytest

from processors.text_batch import analyse_lines, mask_lines
from streams.batch import InputLine, Rejected, Summary, run_batch
from streams.cli import build_parser


def _run(lines: list[bytes], process, required, chunk: int = 3):
    out, rejects = io.StringIO(), io.StringIO()
    summary = run_batch(io.BytesIO(b"".join(lines)), out, rejects, process, required,
                        progress=io.StringIO(), chunk=chunk)
    parse = lambda text: [json.loads(x) for x in text.splitlines()]  # noqa: E731
    return summary, parse(out.getvalue()), parse(rejects.getvalue())


def _echo(lines):
    return [{"id": line.record["id"], "n": line.number} if line.record["id"] != "bad"
            else Rejected("refused by the processor") for line in lines]


def test_outputs_follow_input_order_and_rejects_carry_line_and_reason():
    lines = [b'{"id": "a"}\n', b"\n", b"{oops\n", b'{"id": "b"}\n', b"[1, 2]\n",
             b'{"id": "bad"}\n', b'{"id": 3}\n', b'{"id": "c"}\n', b"\xff\xfe\n"]
    summary, out, rejects = _run(lines, _echo, ("id",))
    assert out == [{"id": "a", "n": 1}, {"id": "b", "n": 4}, {"id": "c", "n": 8}]
    assert [(r["line"], r["reason"].split(":")[0]) for r in rejects] == [
        (3, "not a JSON line"), (5, "a JSON list, not an object"),
        (6, "refused by the processor"), (7, "missing or not a string"),
        (9, "not a JSON line"),
    ]
    assert (summary.processed, summary.rejected) == (3, 5)
    assert summary.exit_code(strict=False) == 0 and summary.exit_code(strict=True) == 1


def test_nothing_processed_exits_non_zero_and_an_empty_input_does_not():
    assert Summary(0, 4).exit_code(strict=False) == 1
    assert Summary(0, 0).exit_code(strict=False) == 0
    summary, out, rejects = _run([], _echo, ("id",))
    assert (summary.processed, out, rejects) == (0, [], [])


def test_the_reject_keeps_only_the_start_of_a_huge_line():
    huge = b'{"text": "' + "字".encode() * 50_000 + b'"}\n'
    _, _, (reject,) = _run([huge], _echo, ("id",))
    assert reject["line"] == 1 and len(reject["input"]) == 500


def test_mask_gives_the_stored_text_and_spans_of_the_text_as_given():
    text = "我叫张三，电话１３９１２３４５６７８，车牌鲁B12345"
    (out,) = mask_lines([InputLine(1, {"id": "m1", "text": text})])
    assert isinstance(out, dict)
    assert out["text"] == "我叫某某,电话[手机号],车牌[车牌]"
    spans = {(s["type"], text[s["start"]:s["end"]]) for s in out["spans"]}
    assert spans == {("name", "张三"), ("phone", "１３９１２３４５６７８"), ("plate", "鲁B12345")}


@pytest.mark.parametrize(
    ("text", "reason"),
    [("", "empty after normalisation"), ("\u200b \u3000", "empty after normalisation"),
     ("长" * 100_000, "characters, limit 2000")],
)
def test_mask_and_analyse_refuse_what_ingest_refuses(domain, text, reason):
    line = InputLine(1, {"id": "h", "text": text})
    for result in (*mask_lines([line], 2000), *analyse_lines([line], domain, 2000)):
        assert isinstance(result, Rejected) and reason in result.reason


def test_hostile_but_valid_texts_are_processed(domain):
    texts = ["😡😡😡🔥", "مرحبا 你好 hello \u202e反转", "'; DROP TABLE citizen_appeals; --",
             "燃气泄漏\x00了"]
    lines = [InputLine(n, {"id": f"h{n}", "text": t}) for n, t in enumerate(texts, 1)]
    masked = mask_lines(lines)
    analysed = analyse_lines(lines, domain)
    assert all(isinstance(r, dict) for r in (*masked, *analysed))
    assert masked[2]["text"] == texts[2]  # SQL-looking text is data
    assert analysed[3]["urgency"] == "critical"


def test_analyse_reads_urgency_repeat_and_flags_as_ingest_does(domain):
    lines = [InputLine(1, {"id": "a", "text": "第三次反映了，燃气泄漏没人管！", "channel": "app"}),
             InputLine(2, {"id": "b", "text": "路灯不亮了，麻烦修一下，谢谢"})]
    first, second = analyse_lines(lines, domain)
    assert first == {"id": "a", "urgency": "critical", "sentiment": "negative",
                     "repeat_complaint": True, "flags": []}
    assert second["urgency"] in domain_levels(domain) and second["repeat_complaint"] is False


def domain_levels(domain) -> set[str]:
    return {t.urgency for t in domain.event_types.values()}


@pytest.mark.parametrize("command", ["mask", "analyse"])
def test_help_documents_the_formats_with_an_example(command, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = capsys.readouterr().out
    assert "In:" in text and "Out:" in text and "--rejects" in text and "--strict" in text


def test_mask_command_writes_output_rejects_and_a_summary(tmp_path, capsys):
    from streams.cli import main

    source = tmp_path / "in.jsonl"
    source.write_text('{"id": "a", "text": "电话13912345678"}\n{"id": "b"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["mask", "--input", str(source), "--output", str(out)]) == 0
    assert [json.loads(x)["text"] for x in out.read_text().splitlines()] == ["电话[手机号]"]
    (reject,) = [json.loads(x) for x in (tmp_path / "out.jsonl.rejects.jsonl").read_text()
                 .splitlines()]
    assert reject["line"] == 2
    assert "1 processed, 1 rejected" in capsys.readouterr().err
    assert main(["mask", "--input", str(source), "--output", str(out), "--strict"]) == 1
