"""Answers checked against the passages they cite: per-sentence support, the extractive fallback, and the
answer metrics of the evaluation harness, with the packaged MiniLM and a real OpenAI-protocol server as the model."""

from __future__ import annotations

import pytest

from apps.rag.grounding import check, content_words, extractive_answer, lexical_support, sentences

MANUAL = ("# Device manual\n\n## Reset\n\nTo reset the device, hold the power button for ten seconds until the LED "
          "blinks red. The settings return to their factory defaults.\n\n## Cleaning\n\nWipe the case with a dry "
          "cloth. Never use solvents on the screen.\n")
PASSAGE = ("To reset the device, hold the power button for ten seconds until the LED blinks red. The settings "
           "return to their factory defaults.")
Q = "how do I reset the device?"


def test_sentences_and_words():
    assert sentences("First claim [1]. Second one here [2]!\nThird line") == ["First claim.", "Second one here!",
                                                                               "Third line"]
    assert {"hold", "button", "blink"} <= content_words("Hold the button until it blinks")
    assert lexical_support("press the reset button", PASSAGE, Q) == 0.5  # "press" is new and not in the passage
    # the served model's own answer to the scanned manual: "10 seconds" is what "ten seconds" says
    assert lexical_support("10 seconds", PASSAGE, "How long do I hold the power button?") == 1.0
    assert lexical_support("five seconds", "hold it for 5 seconds", "") == 1.0
    assert lexical_support("11 seconds", PASSAGE, "") == 0.5


@pytest.mark.parametrize("answer, grounded", [
    ("You can reset the device by pressing the reset button.", False),  # the hand-tried failure in the issue
    ("Bananas are an excellent source of potassium.", False),
    ("Hold the power button for ten seconds until the LED blinks red [1].", True),
    ("Press and hold the power button for 10 seconds; the LED will blink red.", True),
])
def test_unsupported_sentences_are_caught(minilm, answer, grounded):
    g = check(answer, Q, [PASSAGE], minilm)
    assert g.grounded is grounded, g
    assert g.method == "embedding+lexical" and len(g.sentences) == 1


def test_extractive_answer_quotes_the_best_sentence(minilm):
    class H:
        text = PASSAGE

    text, cited = extractive_answer(Q, [H()], minilm)
    assert '"To reset the device, hold the power button for ten seconds until the LED blinks red." [1]' in text
    assert cited == [1]


@pytest.fixture(scope="module")
def scripted():
    """The chat model: a real OpenAI-protocol HTTP server that answers with the text a test sets."""
    from tests.fake_openai import FakeOpenAI

    fake = FakeOpenAI("scripted").start()
    yield fake
    fake.stop()


def _use(service, scripted, reply):
    from apps.client import ConductorClient

    scripted.reply = reply
    service._client = ConductorClient(base_url=scripted.base_url.removesuffix("/v1"))


def test_ask_replaces_an_unsupported_answer(service, tmp_path, scripted):
    (tmp_path / "manual.md").write_text(MANUAL)
    service.ingest([str(tmp_path / "manual.md")], "kb")
    for reply, grounded in (("You can reset the device by pressing the reset button.", False),
                            ("Hold the power button for ten seconds until the LED blinks red [1].", True)):
        _use(service, scripted, reply)
        ans = service.ask("kb", Q)
        assert ans.grounded is grounded and ans.grounding.method == "embedding+lexical"
        if grounded:
            assert ans.answer == reply and ans.model_answer is None
        else:
            assert ans.model_answer == reply and "hold the power button for ten seconds" in ans.answer
            assert ans.citations and ans.sources[ans.citations[0] - 1].cited
            assert "not supported" in ans.grounding.reason


def test_answer_metrics_in_the_harness(service, tmp_path, scripted):
    import json

    from apps.rag.eval import run_and_record

    (tmp_path / "manual.md").write_text(MANUAL)
    service.ingest([str(tmp_path / "manual.md")], "kb")
    qfile = tmp_path / "q.jsonl"
    qfile.write_text(json.dumps({"question": Q, "gold": ["manual.md"]}) + "\n")
    _use(service, scripted, "Hold the power button for ten seconds until the LED blinks red [1].")
    good = run_and_record(service, "kb", str(qfile), modes=["hybrid"], answers=1)["answers"]
    _use(service, scripted, "Bananas are an excellent source of potassium.")
    bad = run_and_record(service, "kb", str(qfile), modes=["hybrid"], answers=1)["answers"]
    assert good["method"] == bad["method"] == "embedding+lexical" and good["n"] == 1
    assert good["faithfulness"] == 1.0 and bad["faithfulness"] == 0.0
    assert good["answer_relevance"] > bad["answer_relevance"]
    assert good["context_recall"] == 1.0 and good["context_precision"] == 1.0
    assert good["grounded"] == 1.0 and bad["grounded"] == 0.0


def test_a_one_word_answer_from_a_table_is_checked_and_a_table_is_quoted_whole(minilm):
    table = ("Quarterly figures by region\n\n| Region | Revenue | Growth |\n| --- | --- | --- |\n"
             "| North | 1200 | 4% |\n| South | 950 | 7% |\n\nFigures are unaudited.")
    q = "What was the revenue of the North region?"
    assert check("1200", q, [table], minilm).grounded
    assert not check("3400", q, [table], minilm).grounded

    class H:
        text = table

    text, _ = extractive_answer(q, [H()], minilm)
    assert "| North | 1200 | 4% |" in text and "| Region | Revenue | Growth |" in text


def test_a_cancelled_ask_stops_the_generation(service, tmp_path):
    """`ask` (a whole answer) streams from the gateway and closes the stream when its request is cancelled, so the
    model stops writing for nobody; a whole-response call would run on to its end."""
    import threading

    from apps.client import ConductorClient
    from apps.rag.answer import AnswerCancelled
    from tests.fake_openai import FakeOpenAI

    (tmp_path / "manual.md").write_text(MANUAL)
    service.ingest([str(tmp_path / "manual.md")], "kb")
    fake = FakeOpenAI("slow").start()
    try:
        fake.reply = " ".join(f"word{i}" for i in range(40))
        fake.word_delay_s = 0.1
        service._client = ConductorClient(base_url=fake.base_url.removesuffix("/v1"))
        stop = threading.Event()
        threading.Timer(1.0, stop.set).start()  # the client leaves a second in
        with pytest.raises(AnswerCancelled):
            service.ask("kb", Q, stop=stop)
        threading.Event().wait(1.0)  # a stream still open would go on sending words meanwhile
        assert 0 < fake.words_streamed < 30, fake.words_streamed
    finally:
        fake.stop()
