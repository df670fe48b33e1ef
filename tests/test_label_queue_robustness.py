"""The label queue (`QueueLabeler`) under real-world files: stray bytes, a BOM, many or foreign bad lines, an
edited file, a last line without its newline, wrong paths, a person who never answers, and out-of-range timings.

Every test works on real files in `tmp_path`: the run's requests are read back from the requests file and the
person's answers are appended to the labels file, as a person would.
"""

from __future__ import annotations

import json
import math
import os
import re
import time

import pytest

from trl_grpo_ext.rewards import ObjectiveError, OnlineRewardModel, QueueLabeler
from trl_grpo_ext.rewards.online_config import check_online_reward_model_config

PROMPTS = ["1+2=", "1+2=", "3+4="]
A = ["3", "4", "7"]
B = ["x", "5", "seven"]


def ask(labeler: QueueLabeler, n: int = 3, offset: int = 0) -> list:
    """One call of the run: `n` distinct pairs (`offset` makes them new)."""
    prompts = [f"{offset + i}+0=" for i in range(n)]
    return labeler(prompts, [f"a{offset + i}" for i in range(n)], [f"b{offset + i}" for i in range(n)])


def requests_of(labeler: QueueLabeler) -> list[dict]:
    return [json.loads(line) for line in labeler.requests_path.read_text(encoding="utf-8").splitlines()]


def answer_line(request: dict, label=1) -> bytes:
    return (json.dumps({"id": request["id"], "label": label}) + "\n").encode()


def queue_config(labeler: dict) -> dict:
    return {"model": "tiny:tiny", "labeler": {"type": "queue", **labeler}}


# ---------------------------------------------------------------------------------------------------- encoding
def test_a_line_that_is_not_utf8_is_reported_once_and_the_other_labels_are_read(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    assert ask(labeler) == [None, None, None]
    first, second, third = requests_of(labeler)
    labeler.path.write_bytes(answer_line(first) + b'{"id": "caf\xe9", "label": 1}\n' + answer_line(second, 0))
    with pytest.raises(ValueError, match=r"labels\.jsonl:2: ") as raised:
        labeler.collect()
    assert not isinstance(raised.value, UnicodeDecodeError)
    assert labeler.outstanding == 3  # nothing is lost: the answered pairs are handed over at the next read
    collected = labeler.collect()
    assert sorted(label for _, label in collected) == [0, 1] and labeler.outstanding == 1
    with labeler.path.open("ab") as f:
        f.write(answer_line(third, 0.5))
    assert [label for _, label in labeler.collect()] == [0.5] and labeler.outstanding == 0


def test_under_skip_a_stray_byte_does_not_stop_the_reward_model_learning(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    rm = OnlineRewardModel("tiny:tiny", labeler=labeler, pairs_per_update=2, heldout_fraction=0.0, error_policy="skip")
    batch = dict(prompts=["1+2="] * 4, completions=["3", "4", "three", "x"], num_generations=4)
    rm(**batch)
    assert rm.labels_used == 0 and labeler.outstanding == 2
    labeler.path.write_bytes(b"\xff\xfe\n" + b"".join(answer_line(r) for r in requests_of(labeler)))
    rm(**batch)  # the bad line is one fault; the two answers are learnt in the same round
    rm(**batch)
    assert rm.labels_used >= 2 and rm.updates >= 1


def test_a_byte_order_mark_does_not_lose_the_first_label(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first, second, _ = requests_of(labeler)
    labeler.path.write_bytes(b"\xef\xbb\xbf" + answer_line(first, 0) + answer_line(second, 1))  # a Windows editor
    assert sorted(label for _, label in labeler.collect()) == [0, 1] and labeler.outstanding == 1


# ---------------------------------------------------------------------------------------------------- bad lines
def test_the_malformed_lines_message_is_bounded(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    bad = "".join(f"not json {i} " + "x" * 250 + "\n" for i in range(200_000))
    labeler.path.write_bytes(answer_line(requests_of(labeler)[0]) + bad.encode())
    with pytest.raises(ValueError) as raised:
        labeler.collect()
    message = str(raised.value)
    assert len(message) < 2_000, len(message)
    assert "labels.jsonl:2: " in message and "not json 0 xxx" in message and "199997 more" in message
    assert "x" * 101 not in message  # each quoted line is cut
    assert [label for _, label in labeler.collect()] == [1]  # each bad line reported once


def test_a_labels_path_linked_to_a_system_file_is_not_copied_into_the_error(tmp_path):
    system = tmp_path / "etc" / "passwd"
    system.parent.mkdir()
    system.write_text("".join(f"user{i}:x:{i}:{i}:SECRET-MARKER-{i}:/home/user{i}:/bin/sh\n" for i in range(50)))
    labels = tmp_path / "queue" / "labels.jsonl"
    labels.parent.mkdir()
    labels.symlink_to(system)
    labeler = QueueLabeler(labels)
    with pytest.raises(ValueError) as raised:
        ask(labeler)
    message = str(raised.value)
    assert "SECRET-MARKER" not in message and "user0" not in message
    assert "labels.jsonl:1: " in message and "no label line" in message


def test_bad_lines_are_quoted_when_the_file_holds_labels(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first = requests_of(labeler)[0]
    labeler.path.write_bytes(answer_line(first) + b'{"id": "abc" "label": 1}\n')
    with pytest.raises(ValueError, match=r"""labels\.jsonl:2: .*'\{"id": "abc" "label": 1\}'"""):
        labeler.collect()


def test_bad_lines_are_reported_by_content_not_line_number(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first, second, third = requests_of(labeler)
    labeler.path.write_bytes(answer_line(first) + b"typo one\n")
    with pytest.raises(ValueError, match=r"labels\.jsonl:2: .*typo one"):
        labeler.collect()
    assert [label for _, label in labeler.collect()] == [1]
    # An editor rewrites the file: a new typo on the same line number is reported...
    labeler.path.write_bytes(answer_line(first) + b"typo two\n" + answer_line(second))
    with pytest.raises(ValueError, match=r"labels\.jsonl:2: .*typo two"):
        labeler.collect()
    # ...and an old typo that moved to another line is not reported again.
    labeler.path.write_bytes(answer_line(first) + answer_line(second) + b"typo one\n" + answer_line(third))
    assert [label for _, label in labeler.collect()] == [1, 1] and labeler.outstanding == 0


# ---------------------------------------------------------------------------------------------------- the last line
def test_a_complete_last_line_without_newline_is_read(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first, second, _ = requests_of(labeler)
    labeler.path.write_bytes(answer_line(first) + answer_line(second, 0).rstrip(b"\n"))
    assert sorted(label for _, label in labeler.collect()) == [0, 1] and labeler.outstanding == 1


def test_an_unparsable_last_line_without_newline_is_read_once_complete(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first, second, _ = requests_of(labeler)
    line = answer_line(second, 0)
    labeler.path.write_bytes(answer_line(first) + line[:10])  # being written: no fault
    assert [label for _, label in labeler.collect()] == [1]
    with labeler.path.open("ab") as f:
        f.write(line[10:])
    assert [label for _, label in labeler.collect()] == [0] and labeler.outstanding == 1


def test_a_last_line_cut_inside_a_character_is_not_a_fault(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    first = requests_of(labeler)[0]
    line = json.dumps({"id": first["id"], "label": 1, "note": "é"}, ensure_ascii=False).encode() + b"\n"
    cut = line.index("é".encode()) + 1
    labeler.path.write_bytes(line[:cut])
    assert labeler.collect() == []
    with labeler.path.open("ab") as f:
        f.write(line[cut:])
    assert [label for _, label in labeler.collect()] == [1]


# ---------------------------------------------------------------------------------------------------- paths
def test_requests_path_equal_to_the_labels_path_is_refused(tmp_path, monkeypatch):
    labels = tmp_path / "labels.jsonl"
    with pytest.raises(ValueError, match=r"`requests_path` must differ from `path`"):
        QueueLabeler(labels, requests_path=labels)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match=r"`requests_path` must differ from `path`"):
        QueueLabeler(labels, requests_path=tmp_path / "sub" / ".." / "labels.jsonl")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`requests_path` must differ from `path`"):
        QueueLabeler("labels.jsonl", requests_path=labels)
    with pytest.raises(ValueError, match=r"`online_reward_model\.labeler\.requests_path` must differ"):
        check_online_reward_model_config(queue_config({"path": "labels.jsonl", "requests_path": str(labels)}))


def test_a_directory_as_labels_or_requests_path_is_refused(tmp_path):
    folder = tmp_path / "labels"
    folder.mkdir()
    with pytest.raises(ValueError, match=r"`path` must be the labels file .*a directory"):
        QueueLabeler(folder)
    with pytest.raises(ValueError, match=r"`requests_path` must be .*a directory"):
        QueueLabeler(tmp_path / "labels.jsonl", requests_path=folder)
    with pytest.raises(ValueError, match=r"`online_reward_model\.labeler\.path` must be .*a directory"):
        check_online_reward_model_config(queue_config({"path": str(folder)}))
    with pytest.raises(ValueError, match=r"`online_reward_model\.labeler\.requests_path` must be .*a directory"):
        check_online_reward_model_config(
            queue_config({"path": str(tmp_path / "l.jsonl"), "requests_path": str(folder)})
        )


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_a_labels_path_that_is_not_a_regular_file_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"`path` must be the labels file .*not a regular file"):
        QueueLabeler("/dev/null", requests_path=tmp_path / "requests.jsonl")


def test_a_labels_file_replaced_by_a_directory_or_a_pipe_is_a_fault_not_a_hang(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    ask(labeler)
    labeler.path.mkdir()
    with pytest.raises(ValueError, match=r"labels\.jsonl' is no longer a regular file"):
        labeler.collect()
    labeler.path.rmdir()
    if hasattr(os, "mkfifo"):
        os.mkfifo(labeler.path)  # reading a pipe nobody writes to would block the run
        with pytest.raises(ValueError, match=r"no longer a regular file"):
            labeler.collect()


# ---------------------------------------------------------------------------------------------------- outstanding
def test_outstanding_pairs_are_capped_and_new_pairs_abstain_until_answers_come(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl", max_outstanding=4)
    assert ask(labeler, n=3) == [None] * 3
    assert ask(labeler, n=3, offset=3) == [None] * 3  # only one more fits
    assert labeler.outstanding == 4 and len(requests_of(labeler)) == 4
    assert ask(labeler, n=3, offset=6) == [None] * 3
    assert len(requests_of(labeler)) == 4 and len(labeler.state_dict()["pending"]) == 4
    with labeler.path.open("ab") as f:
        for request in requests_of(labeler)[:2]:
            f.write(answer_line(request))
    assert len(labeler.collect()) == 2 and labeler.outstanding == 2
    ask(labeler, n=3, offset=9)
    assert labeler.outstanding == 4 and len(requests_of(labeler)) == 6


def test_the_default_cap_bounds_a_queue_nobody_answers(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    for round_ in range(200):
        ask(labeler, n=8, offset=8 * round_)
    assert labeler.outstanding == labeler.max_outstanding == 256
    assert len(labeler.state_dict()["pending"]) == 256 and len(requests_of(labeler)) == 256


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "8", None])
def test_max_outstanding_is_validated(tmp_path, value):
    with pytest.raises(ValueError, match=rf"`max_outstanding` must be an integer >= 1, got {re.escape(repr(value))}"):
        QueueLabeler(tmp_path / "labels.jsonl", max_outstanding=value)
    with pytest.raises(ValueError, match=r"`online_reward_model\.labeler\.max_outstanding` must be an integer >= 1"):
        check_online_reward_model_config(queue_config({"path": "l.jsonl", "max_outstanding": value}))


def test_max_outstanding_from_the_config(tmp_path):
    config = check_online_reward_model_config(queue_config({"path": str(tmp_path / "l.jsonl"), "max_outstanding": 8}))
    assert config["labeler"]["max_outstanding"] == 8


# ---------------------------------------------------------------------------------------------------- timings
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("timeout", math.inf),
        ("timeout", 1e300),
        ("timeout", 86_401),
        ("timeout", -1),
        ("timeout", math.nan),
        ("poll_interval", 1e300),
        ("poll_interval", 3_601),
        ("poll_interval", 0),
        ("poll_interval", math.inf),
        ("poll_interval", True),
    ],
)
def test_timeout_and_poll_interval_are_bounded_in_python_and_in_the_config(tmp_path, field, value):
    with pytest.raises(ValueError, match=rf"`{field}` must be a number of seconds .*got {re.escape(repr(value))}"):
        QueueLabeler(tmp_path / "labels.jsonl", **{field: value})
    with pytest.raises(ValueError, match=rf"`online_reward_model\.labeler\.{field}` must be a number of seconds"):
        check_online_reward_model_config(queue_config({"path": "l.jsonl", field: value}))


def test_the_largest_timings_are_accepted(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl", timeout=86_400, poll_interval=3_600)
    assert (labeler.timeout, labeler.poll_interval) == (86_400.0, 3_600.0)
    from trl_grpo_ext.rewards.labelers import check_queue_settings

    settings = check_queue_settings(tmp_path / "labels.jsonl", timeout=0, poll_interval=0.01)
    assert settings["timeout"] == 0.0 and settings["requests_path"] == tmp_path / "labels.requests.jsonl"


def test_a_poll_interval_longer_than_the_timeout_does_not_wait_past_it(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl", timeout=0.2, poll_interval=3_600)
    start = time.monotonic()
    assert ask(labeler) == [None] * 3
    assert time.monotonic() - start < 5


def test_objective_error_under_raise_names_the_line(tmp_path):
    labeler = QueueLabeler(tmp_path / "labels.jsonl")
    rm = OnlineRewardModel(
        "tiny:tiny", labeler=labeler, pairs_per_update=2, heldout_fraction=0.0, error_policy="raise"
    )
    labeler.path.write_bytes(b"\xff\n")
    with pytest.raises(ObjectiveError, match=r"labels\.jsonl:1: "):
        rm(prompts=["1+2="] * 4, completions=["3", "4", "three", "x"], num_generations=4)
