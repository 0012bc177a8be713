"""Generated problems: every generator gives a question and a solution, and the solutions are right."""

from __future__ import annotations

import datetime
import random
import re

import pytest

from ptp.data import chat_problems as p


@pytest.mark.parametrize("make", p.ARITHMETIC + p.REASONING, ids=lambda f: f.__name__)
def test_every_generator_gives_a_question_and_a_solution(make):
    rng = random.Random(0)
    pairs = [make(rng) for _ in range(200)]
    assert all(q.strip() and s.strip() for q, s in pairs)
    assert len({q for q, _ in pairs}) > 20  # the numbers and names vary


def test_solutions_are_right():
    rng = random.Random(1)
    for _ in range(200):
        question, solution = p._equation(rng)
        a, sign, b, c = re.search(r"(-?\d+)x ([+-]) (\d+) = (-?\d+)", question).groups()
        x = int(solution.rsplit("x = ", 1)[1].rstrip("."))
        assert int(a) * x + (int(b) if sign == "+" else -int(b)) == int(c)

        question, solution = p._clock(rng)
        hours, minutes, length = map(int, re.search(r"(\d+):(\d+) and lasts (\d+)", question).groups())
        end = datetime.datetime(2025, 1, 1, hours, minutes) + datetime.timedelta(minutes=length)
        assert solution.endswith(f"{end:%H:%M}.")

        question, solution = p._weekday(rng)
        today = next(d for d in p.w.DAYS if f" {d}" in question.split(",")[0] or question.startswith(f"Today is {d}"))
        n = int(re.search(r"(\d+) days", question).group(1))
        step = n if "will it be" in question else -n
        assert solution.endswith(p.w.DAYS[(p.w.DAYS.index(today) + step) % 7] + ".")


def test_fact_questions_match_their_passages():
    rng = random.Random(2)
    for _ in range(100):
        passage, facts = p.fact_passage(rng)
        question, answer = p.fact_question(rng, facts)
        if "people" in facts:
            assert all(name in passage for name in facts["people"])
        if question == "What is the total cost of the order?":
            total = sum(n * price for n, price in facts["orders"].values())
            assert answer == f"The total is ${total // 100}.{total % 100:02d}."
