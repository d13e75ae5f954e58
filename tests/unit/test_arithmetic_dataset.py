import re

import pytest
from math_verify import parse, verify

from shared.datasets.arithmetic import INSTRUCTION, NAMES, ArithmeticDataset, Difficulty, Story, column_step

SMALL = ArithmeticDataset(train_size=300, test_size=100, ood_size=100, warmup_size=100)


def test_problems_are_deterministic_from_the_seed():
    assert SMALL.problems("train") == ArithmeticDataset(**SMALL.model_dump()).problems("train")
    other = ArithmeticDataset(**{**SMALL.model_dump(), "seed": 1})
    assert [p.prompt for p in other.problems("test")] != [p.prompt for p in SMALL.problems("test")]


def test_test_stories_never_appear_in_training():
    test_prompts = {p.prompt for p in SMALL.problems("test")}
    assert not test_prompts & {p.prompt for p in SMALL.problems("train")}


@pytest.mark.parametrize("split", ["warmup", "train", "test", "ood"])
def test_demonstrations_verify_against_their_own_answers(split):
    for problem in SMALL.problems(split):
        (demo,) = problem.demonstrations
        assert demo.rstrip().endswith(f"\\boxed{{{problem.answer}}}.")
        assert verify(parse(problem.answer), parse(demo)), problem


def test_demonstration_arithmetic_is_right_line_by_line():
    for problem in SMALL.problems("ood"):
        for line in problem.demonstrations[0].splitlines()[:-1]:
            a, op, b, result = re.match(r"(\d+)([+-])(\d+): .*, so (\d+)\.$", line).groups()
            assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b)), line


TEACHER = ArithmeticDataset(**{**SMALL.model_dump(), "demonstrations": "teacher"})


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_teacher_demonstrations_restate_each_step_and_do_it_in_one_go(split):
    for column, teacher in zip(SMALL.problems(split), TEACHER.problems(split)):
        assert (column.prompt, column.answer) == (teacher.prompt, teacher.answer)  # same stories, other traces
        (demo,) = teacher.demonstrations
        lines = demo.splitlines()
        assert re.fullmatch(r"\w+ starts with \d+ \w+\.", lines[0])
        assert len(lines) == column.prompt.count("Then ") + 2
        for line in lines[1:-1]:
            a, op, b, result = re.fullmatch(r"\w+ [a-z ]+ \d+, so (\d+) ([+-]) (\d+) = (\d+)\.", line).groups()
            assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b)), line
        assert verify(parse(teacher.answer), parse(demo)), demo


def test_the_warmup_keeps_the_base_policys_column_style_under_teacher_demonstrations():
    assert TEACHER.problems("warmup") == SMALL.problems("warmup")


@pytest.mark.parametrize(
    ("split", "lo", "hi"), [("train", 2, 3), ("test", 2, 3), ("ood", 4, 5)]
)
def test_split_difficulty_is_the_number_of_operations(split, lo, hi):
    counts = {p.prompt.count("Then ") for p in SMALL.problems(split)}
    assert counts <= set(range(lo, hi + 1)) and len(counts) == hi - lo + 1


def test_the_warmup_is_one_and_two_steps_with_a_few_three_step_stories():
    counts = [p.prompt.count("Then ") for p in ArithmeticDataset(warmup_size=4000).problems("warmup")]
    assert set(counts) == {1, 2, 3}
    assert 0.04 < counts.count(3) / len(counts) < 0.06
    assert abs(counts.count(1) - counts.count(2)) < 0.1 * len(counts)


def test_running_totals_stay_in_range():
    for problem in SMALL.problems("ood"):
        assert 0 <= int(problem.answer) <= 999


@pytest.mark.parametrize(
    ("total", "amount", "line", "result"),
    [
        (47, 25, "47+25: 7+5=12, 4+2+1=7, so 72.", 72),
        (72, -18, "72-18: 12-8=4, 6-1=5, so 54.", 54),
        (102, -76, "102-76: 12-6=6, 9-7=2, 0-0=0, so 26.", 26),
        (105, -3, "105-3: 5-3=2, so 102.", 102),
        (9, 1, "9+1: 9+1=10, so 10.", 10),
    ],
)
def test_column_steps(total, amount, line, result):
    assert column_step(total, amount) == (line, result)


def test_bad_difficulty_is_refused():
    with pytest.raises(ValueError, match="min_ops"):
        Difficulty(min_ops=3, max_ops=2)


def test_story_question_mentions_every_change():
    import random

    story = Story.sample(random.Random(3), Difficulty(min_ops=3, max_ops=3))
    question = story.question()
    assert str(story.start) in question and question.endswith("\\boxed{}.")
    for _, amount in story.changes:
        assert f" {abs(amount)}." in question


def test_the_default_ood_split_is_the_longer_stories_of_the_first_comparisons():
    assert ArithmeticDataset().ood_name == "longer"
    assert ArithmeticDataset(ood="longer").problems("ood") == ArithmeticDataset().problems("ood")
    assert ArithmeticDataset(ood={"min_ops": 4, "max_ops": 5}).ood_name == "longer"


def test_the_three_digit_start_split_has_trainings_lengths_on_a_three_digit_opening_amount():
    dataset = ArithmeticDataset(ood="three-digit-start", ood_size=200)
    problems = dataset.problems("ood")
    assert {p.prompt.count("Then ") for p in problems} == {2, 3}
    starts = [int(re.match(r"\w+ has (\d+) ", p.prompt).group(1)) for p in problems]
    assert all(100 <= s <= 899 for s in starts)
    for problem in problems:  # the column demonstrations still verify, running totals in range
        assert verify(parse(problem.answer), parse(problem.demonstrations[0]))
        assert 0 <= int(problem.answer) <= 999
    # no training story has a three-digit opening amount
    train_starts = {int(re.match(r"\w+ has (\d+) ", p.prompt).group(1)) for p in SMALL.problems("train")}
    assert max(train_starts) <= 99


def test_an_unknown_ood_split_is_refused_naming_the_known_ones():
    with pytest.raises(ValueError, match="three-digit-start"):
        ArithmeticDataset(ood="bigger")


def test_a_start_range_outside_the_values_is_refused():
    with pytest.raises(ValueError, match="min_start"):
        Difficulty(min_ops=1, max_ops=2, min_start=90, max_start=50)


VERIFIED = ArithmeticDataset(**{**SMALL.model_dump(), "demonstrations": "verified"})


@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_verified_demonstrations_are_the_column_work_then_a_restatement_and_a_backward_check(split):
    for column, verified in zip(SMALL.problems(split), VERIFIED.problems(split)):
        assert (column.prompt, column.answer) == (verified.prompt, verified.answer)
        column_lines, lines = column.demonstrations[0].splitlines(), verified.demonstrations[0].splitlines()
        assert lines[:-2] == column_lines[:-1]  # the base policy's own column work, unchanged
        assert lines[-1] == column_lines[-1]
        close = re.fullmatch(r"So \w+ has (\d+) \w+ now\. Check backwards: (.*), as in the story\.", lines[-2])
        assert close and close.group(1) == verified.answer
        undo = re.findall(r"(\d+)([+-])(\d+)=(\d+)", close.group(2))
        assert len(undo) == column.prompt.count("Then ")
        assert undo[0][0] == verified.answer
        assert undo[-1][3] == re.match(r"\w+ has (\d+) ", verified.prompt).group(1)  # back to the opening amount
        for a, op, b, result in undo:
            assert int(result) == (int(a) + int(b) if op == "+" else int(a) - int(b))
        assert verify(parse(verified.answer), parse(verified.demonstrations[0]))


def test_the_warmup_keeps_the_column_style_under_verified_demonstrations():
    assert VERIFIED.problems("warmup") == SMALL.problems("warmup")


def test_the_retold_split_is_trainings_stories_in_other_sentences():
    problems = ArithmeticDataset(ood="retold", ood_size=100).problems("ood")
    assert {p.prompt.count("Next, ") for p in problems} == {2, 3}
    for problem in problems:
        assert re.fullmatch(
            r"\w+ starts out with \d+ \w+\.( Next, \w+ [a-z ]+ \d+\.)+ How many \w+ are with \w+ in the end\? "
            + re.escape(INSTRUCTION),
            problem.prompt,
        ), problem.prompt
        assert "Then " not in problem.prompt and " has " not in problem.prompt  # none of training's sentences
        assert verify(parse(problem.answer), parse(problem.demonstrations[0]))
    assert all(p.prompt.startswith(tuple(NAMES)) for p in problems)


def test_the_new_names_split_keeps_trainings_sentences_about_people_and_things_training_never_names():
    from shared.datasets.arithmetic import ITEMS, NEW_ITEMS, NEW_NAMES

    problems = ArithmeticDataset(ood="new-names", ood_size=100).problems("ood")
    assert {p.prompt.count("Then ") for p in problems} == {2, 3}
    for problem in problems:
        name, item = re.match(r"(\w+) has \d+ (\w+)\.", problem.prompt).groups()
        assert name in NEW_NAMES and item in NEW_ITEMS
        assert problem.prompt.endswith(f"How many {item} does {name} have now? {INSTRUCTION}")
    training = " ".join(p.prompt for p in SMALL.problems("train"))
    assert not any(f"{n} " in training for n in NEW_NAMES) and not set(NEW_ITEMS) & set(ITEMS)
