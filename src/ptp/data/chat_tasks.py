"""Task families of the chat prompts: one function per category, drawing a prompt from a seeded random generator.

Every family takes ``(rng, docs)`` (a ``random.Random`` and the harvested :class:`~ptp.data.chat_prompts.Documentation`)
and returns the messages of one prompt: an optional system message, then user and assistant turns in turn, ending
with a user turn. Arithmetic and reasoning problems are generated with their solutions, so multi-turn chats can hold
an earlier answer that is right; other earlier answers are written from templates and kept short.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from ptp.data import chat_problems as p
from ptp.data import chat_words as w

if TYPE_CHECKING:
    from random import Random

    from ptp.data.chat_prompts import DocItem, Documentation


def _chat(*turns: str, system: str | None = None) -> list[dict]:
    """Messages from alternating user and assistant texts (starting and ending with the user's)."""
    messages = [{"role": "system", "content": system}] if system else []
    roles = ("user", "assistant")
    return messages + [{"role": roles[i % 2], "content": text} for i, text in enumerate(turns)]


def _maybe(rng: Random, options, chance: float = 0.5, sep: str = " ") -> str:
    """``sep`` plus one of ``options`` with probability ``chance``, else nothing."""
    return sep + rng.choice(options) if rng.random() < chance else ""


def _code(source: str) -> str:
    return f"```python\n{source}\n```"


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _plang(rng: Random) -> str:
    return "Python" if rng.random() < 0.6 else rng.choice(w.PROGRAMMING_LANGUAGES)


def _city(rng: Random, text: str) -> str:
    return text.replace("{city}", rng.choice(w.CITIES))


MATH_SUFFIXES = (
    "Show your work.", "Explain each step.", "Give only the final answer.", "Think step by step.",
    "Answer in one sentence.", "Check your answer at the end.", "Explain it as you would to a twelve-year-old.",
)  # fmt: skip

REASONING_SUFFIXES = ("Explain your reasoning.", "Answer briefly.", "Think it through step by step.",
                      "Give the answer first, then the explanation.")  # fmt: skip


def math_family(rng: Random, docs: Documentation) -> list[dict]:
    question, _ = rng.choice(p.ARITHMETIC)(rng)
    return _chat(question + _maybe(rng, MATH_SUFFIXES, 0.6))


def reasoning_family(rng: Random, docs: Documentation) -> list[dict]:
    question, _ = rng.choice(p.REASONING)(rng)
    return _chat(question + _maybe(rng, REASONING_SUFFIXES, 0.5))


# Code.


def code_writing_family(rng: Random, docs: Documentation) -> list[dict]:
    kind = rng.random()
    if kind < 0.35:
        task, language = rng.choice(w.CODE_TASKS), _plang(rng)
        verb = rng.choice(("Write", "Create", "Implement", "Code up", "Show me"))
        text = rng.choice((f"{verb} a {language} function that {task}.", f"I need {language} code that {task}.",
                           f"How would you write a {language} function that {task}?",
                           f"Can you help me with a function in {language} that {task}?"))  # fmt: skip
        return _chat(text + _maybe(rng, w.CODE_CONSTRAINTS, 0.6))
    item = rng.choice(docs.callables)
    summary, sig, short = item.summary, item.signature, item.short
    if item.kind == "method":
        subject = f"a method `{short}{sig}` of a class `{item.name.split('.')[-2]}`"
    elif item.kind == "class":
        subject = f"a class `{short}` whose constructor takes `{sig}`"
    else:
        subject = f"a function `{short}{sig}`"
    if kind < 0.75:
        text = rng.choice((
            f"Write {subject} in Python that does the following: {summary}",
            f"Implement {subject} from scratch. Its documentation says: \"{summary}\"",
            f"In Python, write {subject}. It is documented as: {summary}",
            f"Here is the description of `{item.name}` from the Python standard library: \"{summary}\" Write your own "
            f"version of it without importing `{item.module}`.",
            f"Write {subject} in {_plang(rng)}. Description: {summary}",
            f"Create a simple version of `{item.name}`. Description: {summary} Keep it short and readable.",
        ))  # fmt: skip
        return _chat(text + _maybe(rng, w.CODE_CONSTRAINTS, 0.4))
    if item.source and rng.random() < 0.5:
        text = rng.choice(("Write unit tests for this function:", "How would you test this code? Write the tests.",
                           "Write pytest tests that cover the edge cases of this function."))  # fmt: skip
        return _chat(f"{text}\n\n{_code(item.source)}")
    text = rng.choice((
        f"Write pytest tests for `{item.name}{sig}`. Its documentation: \"{summary}\" Cover edge cases.",
        f"Give me three unittest test cases for `{item.name}`, which is documented as: {summary}",
        f"What should a test suite for `{item.name}` check? It is described as \"{summary}\" Write a few tests.",
    ))  # fmt: skip
    return _chat(text)


def code_explanation_family(rng: Random, docs: Documentation) -> list[dict]:
    item = rng.choice(docs.snippets)
    code = _code(item.source)
    text = rng.choice((
        f"Explain what this Python function does:\n\n{code}",
        f"Walk me through this code line by line.\n\n{code}",
        f"What is the time complexity of this function? Explain.\n\n{code}",
        f"{code}\n\nDescribe in plain English what `{item.short}` computes, and give an example call.",
        f"I found this in the `{item.module}` module of the Python standard library. What is it for?\n\n{code}",
        f"Add comments to this code that explain each step.\n\n{code}",
        f"Summarize this function in one sentence.\n\n{code}",
        f"{code}\n\nWhat are the inputs and outputs of this function? Could it raise an exception?",
        f"Explain this code to {rng.choice(w.AUDIENCES)}:\n\n{code}",
    ))  # fmt: skip
    return _chat(text)


# An operator and what replaces it, to plant a bug in a snippet.
MUTATIONS = ((" < ", " <= "), (" <= ", " < "), (" > ", " >= "), (" >= ", " > "), (" == ", " != "), (" != ", " == "),
             (" + 1", " - 1"), (" - 1", " + 1"), (" and ", " or "), (" or ", " and "), ("return True", "return False"),
             ("return False", "return True"), (" is None", " is not None"), (" is not None", " is None"),
             ("[0]", "[1]"), ("[-1]", "[0]"))  # fmt: skip


def _plant_bug(rng: Random, source: str) -> str | None:
    """``source`` with one operator changed (the first of a random pattern's occurrences at random), or None."""
    places = [(i, old, new) for old, new in MUTATIONS for i in range(len(source)) if source.startswith(old, i)]
    if not places:
        return None
    i, old, new = rng.choice(places)
    return source[:i] + new + source[i + len(old) :]


def code_review_family(rng: Random, docs: Documentation) -> list[dict]:
    item = rng.choice(docs.snippets)
    buggy = _plant_bug(rng, item.source) if rng.random() < 0.4 else None
    if buggy is not None:
        text = rng.choice(("This function has a bug. Find it and fix it.",
                           "Something is wrong with this code: it gives wrong results. What is the mistake?",
                           "Spot the error in this function and explain the fix.",
                           f"This is documented as \"{item.summary}\" but it does not work. Why?"))  # fmt: skip
        return _chat(f"{text}\n\n{_code(buggy)}")
    text = rng.choice((
        "Refactor this function to make it easier to read.", "Add type hints to this function.",
        "Write a docstring for this function.", f"Rewrite this function in {rng.choice(w.PROGRAMMING_LANGUAGES)}.",
        "Review this code as a senior engineer would: list three improvements.",
        "Can this function be made faster or simpler? Show a better version if so.",
        "Rename the variables in this code to be more descriptive.", "What edge cases does this code not handle?",
    ))  # fmt: skip
    code = _code(item.source)
    return _chat(f"{text}\n\n{code}" if rng.random() < 0.7 else f"{code}\n\n{text}")


# Explanation and comparison.


def _concept_question(rng: Random, term: str) -> str:
    return rng.choice((
        f"Explain {term} to {rng.choice(w.AUDIENCES)}.", f"What is meant by {term}?",
        f"Can you give me a simple explanation of {term}, with an example?",
        f"In two or three sentences, what does '{term}' mean?",
        f"I keep hearing about {term}. What is it, and why does it matter?",
        f"Define {term} and give an analogy from everyday life.", f"What are common misconceptions about {term}?",
    ))  # fmt: skip


def concept_family(rng: Random, docs: Documentation) -> list[dict]:
    kind = rng.random()
    if kind < 0.3:
        text = _concept_question(rng, rng.choice(w.CS_CONCEPTS if rng.random() < 0.5 else w.GENERAL_CONCEPTS))
    elif kind < 0.45:
        topic = rng.choice(docs.topics).name.replace('"', "")
        text = rng.choice((f"Explain this part of Python: {topic}. Include a small example.",
                           f"How does Python handle {_lower_first(topic)}? Explain with code.",
                           f"What should a beginner know about {_lower_first(topic)} in Python?"))  # fmt: skip
    elif kind < 0.7:
        module = rng.choice(docs.modules)
        text = rng.choice((
            f"What is the Python `{module.name}` module used for? Give an example.",
            f"The Python documentation describes `{module.name}` as: \"{module.summary}\" What does that mean in "
            "practice?", f"When would I reach for the `{module.name}` module in Python?",
            f"Give me a quick tour of the `{module.name}` module: what are its most useful parts?",
        ))  # fmt: skip
    else:
        item = rng.choice(docs.callables)
        text = rng.choice((
            f"What does `{item.name}` do in Python? Show a short example.",
            f"How do I use `{item.name}{item.signature}`?",
            f"Explain the parameters of `{item.name}{item.signature}`.",
            f"When would I use `{item.name}` instead of writing my own code?",
            f"The documentation of `{item.name}` says: \"{item.summary}\" Explain that in simpler words.",
        ))  # fmt: skip
    return _chat(text + _maybe(rng, ("Keep it short.", "Use bullet points.", "Answer in under 100 words."), 0.3))


def _module_pair(rng: Random, docs: Documentation) -> tuple[str, str]:
    """Two different modules: often neighbours in sorted order, which are related (``email.mime``, ``email.parser``)."""
    n = len(docs.modules)
    first = rng.randrange(n)
    second = (first + (rng.randint(1, 3) if rng.random() < 0.5 else rng.randint(1, n - 1))) % n
    return f"`{docs.modules[first].name}`", f"`{docs.modules[second].name}`"


def comparison_family(rng: Random, docs: Documentation) -> list[dict]:
    kind = rng.random()
    if kind < 0.3:
        a, b = _module_pair(rng, docs)
    elif kind < 0.5:
        first = rng.randrange(len(docs.callables) - 1)
        a, b = docs.callables[first].name, docs.callables[first + 1].name
        a, b = f"`{a}`", f"`{b}`"
    elif kind < 0.8:
        a, b = rng.choice(w.CONCEPT_PAIRS)
    elif kind < 0.9:
        a, b = rng.sample(w.CITIES, 2)
        return _chat(rng.choice((f"Compare living in {a} with living in {b}.",
                                 f"{a} or {b} for a one-week holiday: which would you choose and why?")))  # fmt: skip
    else:
        a, b = (w.with_article(job) for job in rng.sample(w.JOBS, 2))
        return _chat(f"What are the differences between working as {a} and working as {b}?")
    text = rng.choice((
        f"Compare {a} and {b}.", f"What's the difference between {a} and {b}?",
        f"When would you choose {a} over {b}?", f"Make a table comparing {a} and {b}.",
        f"What do {a} and {b} have in common, and how do they differ?",
        f"Explain the difference between {a} and {b} in simple terms.", f"Pros and cons: {a} versus {b}.",
    ))  # fmt: skip
    return _chat(text)


# Writing and roleplay.


def _product_name(rng: Random) -> str:
    return rng.choice(w.NAME_PARTS) + rng.choice(w.NAME_ENDINGS)


def writing_family(rng: Random, docs: Documentation) -> list[dict]:
    name, tone, product = rng.choice(w.NAMES), rng.choice(w.TONES), rng.choice(w.PRODUCTS)
    character, setting, element = rng.choice(w.CHARACTERS), rng.choice(w.SETTINGS), rng.choice(w.STORY_ELEMENTS)
    form, subject, mood = rng.choice(w.POEM_FORMS), rng.choice(w.SUBJECTS), rng.choice(w.MOODS)
    task, city, job = rng.choice(w.EMAIL_TASKS), rng.choice(w.CITIES), w.with_article(rng.choice(w.JOBS))
    text = rng.choice((
        f"Write a {tone} email to {task}.", f"Draft a short, {tone} email in which you {task}.",
        f"Help me write an email: I need to {task}. Keep the tone {tone}.",
        f"Can you compose an email that will {task}? Sign it as {name}.",
        f"Write a short story about {character} in {setting}, involving {element}.",
        f"Tell a {mood} story of under 200 words featuring {character}.",
        f"Write the opening paragraph of a novel set in {setting}.",
        f"Write a bedtime story for a child about {character}.",
        f"Write a story in exactly five sentences about {element}.",
        f"Write a {form} about {subject}.", f"Compose a {mood} {form} about {subject}.",
        f"Could you write me a {form} on the theme of {subject}?",
        f"Write a {form} about {subject} for my friend {name}.",
        f"Write a product description for {product}, aimed at {rng.choice(w.BUYERS)}.",
        f"Write three {rng.choice(w.ADJECTIVES)} taglines for {product}.",
        f"Write an online shop listing for {product}: a title, three bullet points and a short paragraph.",
        f"Write a 30-second radio advertisement for {product}. Make it {tone}.",
        f"Write a social media post announcing {rng.choice(w.EVENTS)} in {city}.",
        f"Write a short notice for a community board about {rng.choice(w.EVENTS)}.",
        f"Write a {rng.randint(1, 5)}-star review of {product}.", f"Write a short toast for {rng.choice(w.OCCASIONS)}.",
        f"Write a cover letter for {name}, who is applying for a job as {job} after {rng.randint(1, 15)} years in "
        "the field.", f"Write a diary entry by {character} on the day of {element}.",
        f"Write a letter from {character} to their younger self.",
        f"Write a dialogue between {_city(rng, rng.choice(w.PERSONAS))} and {_city(rng, rng.choice(w.PERSONAS))} "
        f"about {subject}.", f"Write a news headline and a two-sentence report about {rng.choice(w.EVENTS)} in {city}.",
        f"Suggest five names for {product}.", f"Come up with a catchy slogan for {product}.",
        f"Give me ten ideas for {rng.choice(w.ACTIVITIES)}.", f"Write an introduction for a blog post about {subject}.",
        f"Write step-by-step instructions for {rng.choice(w.HOW_TOS)}.",
        f"Write a short speech {job} could give to a class of schoolchildren about their work.",
        f"Write a limerick about {job} from {city}.", f"Describe {setting} in vivid detail, in one paragraph.",
    ))  # fmt: skip
    return _chat(text + _maybe(rng, w.WRITING_CONSTRAINTS, 0.4))


ROLEPLAY_SYSTEMS = (
    "You are {p}. Stay in character.",
    "You are {p}. Stay in character and keep your answers short.",
    "Roleplay as {p}. Never break character.",
    "You are playing {p} in a conversation with {u}.",
)
ROLEPLAY_OPENINGS = ("Pretend you are {p}. {r}", "Let's play a game: you are {p} and I am {u}. {r}", "Act as {p}. {r}",
                     "I want you to roleplay as {p}. Stay in character. {r}", "Imagine you're {p}. {r}",
                     "You are {p}, talking to {u}. {r}")  # fmt: skip


def roleplay_family(rng: Random, docs: Documentation) -> list[dict]:
    persona, request, user = (
        _city(rng, rng.choice(w.PERSONAS)),
        rng.choice(w.ROLEPLAY_REQUESTS),
        rng.choice(w.USER_ROLES),
    )
    if rng.random() < 0.5:
        return _chat(request, system=rng.choice(ROLEPLAY_SYSTEMS).format(p=persona, u=user))
    return _chat(rng.choice(ROLEPLAY_OPENINGS).format(p=persona, u=user, r=request))


# Work on a given text: summarisation, translation, extraction, question answering.


def summarization_family(rng: Random, docs: Documentation) -> list[dict]:
    if rng.random() < 0.8:
        owner, passage = rng.choice(docs.passages)
    else:
        owner, passage = None, p.fact_passage(rng)[0]
    audience = rng.choice(w.AUDIENCES)
    text = rng.choice((
        f"Summarize the following text in one sentence:\n\n{passage}",
        f"Give me a TL;DR of this passage:\n\n{passage}",
        f"Summarize this in three bullet points.\n\n{passage}",
        f"Read this and explain the main idea in plain language for {audience}:\n\n{passage}",
        f"Write a summary of at most {rng.choice((20, 30, 40, 50))} words of the following passage.\n\n{passage}",
        f"{passage}\n\nSummarize the text above.", f"Condense this into two short sentences:\n\n\"{passage}\"",
        f"What are the key points of this text? Answer as a numbered list.\n\n{passage}",
        f"Write a headline and a one-sentence summary for this text:\n\n{passage}",
    ))  # fmt: skip
    if owner is not None and rng.random() < 0.25:
        text = f"Here is part of the documentation of `{owner.name}`:\n\n{passage}\n\nSummarize it for a developer."
    return _chat(text)


def translation_family(rng: Random, docs: Documentation) -> list[dict]:
    sentence = rng.choice(docs.sentences) if rng.random() < 0.65 else p.everyday_sentence(rng)
    language = rng.choice(w.LANGUAGES)
    text = rng.choice((
        f"Translate into {language}: {sentence}", f"How would you say this in {language}? \"{sentence}\"",
        f"Please translate the following sentence from English to {language}.\n\n{sentence}",
        f"{language} translation of: {sentence}",
        f"Translate this into {language}, then explain any word that was hard to translate.\n\n{sentence}",
        f"Give me the {language} version of this sentence, keeping names and code unchanged: {sentence}",
        f"Translate to {language} and back to English, and tell me what changed.\n\n\"{sentence}\"",
    ))  # fmt: skip
    return _chat(text)


def extraction_family(rng: Random, docs: Documentation) -> list[dict]:
    if rng.random() < 0.3:
        owner, passage = rng.choice(docs.passages)
        text = rng.choice((
            "List every function, class or module name mentioned in this text, as a JSON array.",
            "Extract all the technical terms from this passage and give a one-line definition of each.",
            "Pull out every number and every quoted name in this text.",
            "Which exceptions or errors does this text mention? Answer as a list, or say there are none.",
        ))  # fmt: skip
        return _chat(f"{text}\n\n{passage}" if rng.random() < 0.5 else f"{passage}\n\n{text}")
    passage, facts = p.fact_passage(rng)
    if "people" in facts:
        text = rng.choice((
            "Extract each person's name, age, city and job as a JSON list of objects.",
            "Make a table with the columns name, age, city and job from this text.",
            "List the names of all the people mentioned, one per line.",
            "Give me CSV with the header name,age,job for every person in this text.",
            "Return a JSON object mapping each person's name to their city.",
        ))  # fmt: skip
    else:
        text = rng.choice((
            "Extract the items, quantities and unit prices as JSON.",
            "List every item ordered with its quantity, then compute the total cost.",
            "Who placed the order, on which date, and from which company? Answer in JSON.",
            "Turn this order into a table with columns item, quantity, unit price and line total.",
        ))  # fmt: skip
    return _chat(f"{text}\n\n{passage}" if rng.random() < 0.6 else f"{passage}\n\n{text}")


def _doc_question(rng: Random, owner: DocItem) -> str:
    if owner.kind == "topic":
        return rng.choice(("What is the main point of this passage?", "Which rule does this passage state? Give an "
                           "example that follows it.", "What would go wrong if a program ignored what this says?",
                           f"According to the passage, what is true about {_lower_first(owner.name)}?"))  # fmt: skip
    return rng.choice((
        f"According to this documentation, what does `{owner.short}` do?",
        f"Based only on the text, when would `{owner.short}` be useful?",
        "Does the passage mention any exception or error? If so, when does it happen?",
        f"What arguments does `{owner.short}` take, according to the passage?",
        "What is the main point of this passage?", "What is one limitation or warning in this passage?",
    ))  # fmt: skip


def qa_family(rng: Random, docs: Documentation) -> list[dict]:
    if rng.random() < 0.6:
        owner, passage = rng.choice(docs.passages)
        question = _doc_question(rng, owner)
    else:
        passage, facts = p.fact_passage(rng)
        question, _ = p.fact_question(rng, facts)
    text = rng.choice((
        f"Read the passage and answer the question.\n\nPassage: {passage}\n\nQuestion: {question}",
        f"{passage}\n\n{question}", f"Answer using only the text below.\n\n{passage}\n\nQuestion: {question}",
        f"Question: {question}\n\nContext:\n{passage}",
        f"Here is some text:\n\n\"{passage}\"\n\n{question} Quote the sentence that supports your answer.",
    ))  # fmt: skip
    return _chat(text)


# Multi-turn chats: 2 or 3 user turns, the earlier assistant turns written here.

FOLLOW_UPS = ("Can you explain that more simply?", "Why is that?", "Can you give me an example?",
              "Summarize that in one sentence.", "Are you sure? Please double-check.", "Put that in a table.",
              "Turn that into a short quiz question for me.", "Thanks! What should I learn next?")  # fmt: skip


def _solved_chat(rng: Random, problems) -> list[dict]:
    make = rng.choice(problems)
    question, solution = make(rng)
    first = rng.choice(("", "Sure. ", "Here is how: ")) + solution
    second_question = rng.choice(("Can you explain each step in more detail?", "Write a Python function that solves "
                                  "this kind of problem for any numbers.", "How could I check that answer quickly?",
                                  "Make up a similar problem for me to practise."))  # fmt: skip
    if rng.random() < 0.5:
        return _chat(question, first, second_question)
    new_question, _ = make(rng)
    last = rng.choice(("Can you solve that one too, step by step?", "Give me a hint for it, but not the answer.",
                       "What is the answer to the new one?", "I got a different number each time. Help!"))  # fmt: skip
    return _chat(question, first, "Make up a similar problem for me to practise.", f"Here is one: {new_question}", last)


def _conversion_chat(rng: Random) -> list[dict]:
    unit = rng.choice(p.CONVERSIONS)
    q1, a1 = p.convert(rng, unit)
    q2, a2 = p.convert(rng, unit)
    q3 = rng.choice(
        (
            f"Write a Python function that converts {unit[0]} to {unit[1]}.",
            "Where does that conversion factor come from?",
            "Give me a quick way to estimate it in my head.",
        )
    )
    return _chat(q1, a1, "And " + _lower_first(q2), a2, q3)


def _people_chat(rng: Random) -> list[dict]:
    passage, facts = p.fact_passage(rng)
    while "people" not in facts:
        passage, facts = p.fact_passage(rng)
    people = facts["people"]
    ages = json.dumps({name: facts["age"] for name, facts in people.items()})
    q3, _ = p.fact_question(rng, facts)
    turns = [f"{passage}\n\nWho is mentioned in this text?", ", ".join(people) + ".",
             "Give me their ages as JSON.", ages, q3]  # fmt: skip
    return _chat(*turns[: rng.choice((3, 5))])


def _doc_chat(rng: Random, docs: Documentation) -> list[dict]:
    item = rng.choice(docs.callables + docs.modules)
    shown = f"`{item.name}{item.signature}`"
    first = rng.choice((f"What does {shown} do?", f"Quick question: what is `{item.name}` for?"))
    answer = rng.choice((f"{shown}: {item.summary}", f"According to its documentation: {item.summary}"))
    specific = ("Can you show a short example?", "When should I not use it?", "Explain that in simpler words.",
                "How would I write it myself?")  # fmt: skip
    if rng.random() < 0.6:
        return _chat(first, answer, rng.choice(specific + FOLLOW_UPS))
    return _chat(first, answer, "Thanks, that helps.", "You're welcome! Anything else about it?", rng.choice(specific))


def _naming_chat(rng: Random) -> list[dict]:
    product, names = rng.choice(w.PRODUCTS), []
    while len(names) < 3:
        names += [n for n in [_product_name(rng)] if n not in names]
    pick = rng.choice(names)
    listing = "\n".join(f"{i}. {n}" for i, n in enumerate(names, start=1))
    slogan = rng.choice(("made for every day", "small thing, big difference", "less fuss, more life", "try it once"))
    turns = [
        f"Suggest three names for {product}.",
        listing,
        f"I like {pick}. Write a slogan for it.",
        f'"{pick}: {slogan}."',
        "Now write a short product description with that name and slogan.",
    ]
    return _chat(*turns[: rng.choice((3, 5))])


def _email_chat(rng: Random) -> list[dict]:
    task, name, other = rng.choice(w.EMAIL_TASKS), rng.choice(w.NAMES), rng.choice(w.NAMES)
    email = f"Hi {other},\n\nI am writing to {task}. Please let me know if you have any questions.\n\nBest,\n{name}"
    follow = ("Make it more formal.", "Make it shorter.", f"Translate it into {rng.choice(w.LANGUAGES)}.",
              f"Add a sentence asking for a reply by {rng.choice(w.DAYS)}.", "Make it sound warmer.")  # fmt: skip
    first = f"Write a short email to {task}. I am {name} and it goes to {other}."
    if rng.random() < 0.5:
        return _chat(first, email, rng.choice(follow))
    short = f"Hi {other}, I would like to {task}. Thanks, {name}"
    return _chat(first, email, "Make it shorter.", short, rng.choice(follow[2:]))


def _roleplay_chat(rng: Random) -> list[dict]:
    persona = _city(rng, rng.choice(w.PERSONAS))
    greeting = rng.choice(("Hello there! I am {p}. What can I do for you?", "Welcome! You are speaking with {p}.",
                           "Ah, a visitor. I am {p}. Ask me anything."))  # fmt: skip
    return _chat(rng.choice(("Hi! Who are you?", "Hello?", "Good evening. Tell me about yourself.")),
                 greeting.format(p=persona), rng.choice(w.ROLEPLAY_REQUESTS),
                 system=rng.choice(ROLEPLAY_SYSTEMS).format(p=persona, u=rng.choice(w.USER_ROLES)))  # fmt: skip


def multi_turn_family(rng: Random, docs: Documentation) -> list[dict]:
    kind = rng.randrange(8)
    if kind == 0:
        return _solved_chat(rng, p.ARITHMETIC)
    if kind == 1:
        return _solved_chat(rng, tuple(x for x in p.REASONING if x is not p.convert))  # conversions: their own chat
    makers = (_conversion_chat, _people_chat, _naming_chat, _email_chat, _roleplay_chat)
    return makers[kind - 2](rng) if kind < 7 else _doc_chat(rng, docs)


#: Category -> family. The builder takes the categories in turn, in this order.
FAMILIES = {
    "code_writing": code_writing_family,
    "code_explanation": code_explanation_family,
    "code_review": code_review_family,
    "concept": concept_family,
    "comparison": comparison_family,
    "math": math_family,
    "reasoning": reasoning_family,
    "writing": writing_family,
    "roleplay": roleplay_family,
    "summarization": summarization_family,
    "translation": translation_family,
    "extraction": extraction_family,
    "qa": qa_family,
    "multi_turn": multi_turn_family,
}
