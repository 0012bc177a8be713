"""Generated texts whose answers are known: arithmetic word problems, reasoning puzzles, and passages of facts.

Each problem generator takes a ``random.Random`` and returns ``(question, solution)``: the solution is a short worked
answer, right by construction, which a multi-turn chat can show as an earlier assistant turn. Numbers are drawn so
that answers come out exact (whole cents, whole days, reduced fractions).
"""

from __future__ import annotations

import datetime
import math
from fractions import Fraction
from typing import TYPE_CHECKING

from ptp.data import chat_words as w

if TYPE_CHECKING:
    from random import Random


def _money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}"


def _number(x: float) -> str:
    """At most two decimals, no trailing zeros (``2.5``, ``3``, ``1,204.37``)."""
    return f"{x:,.2f}".rstrip("0").rstrip(".")


# Arithmetic word problems: each returns (question, worked solution ending with the answer).


def _change(rng: Random) -> tuple[str, str]:
    name, (item, low, high) = rng.choice(w.NAMES), rng.choice(w.SHOP_ITEMS)
    n, price = rng.randint(2, 9), 5 * rng.randint(low // 5, high // 5)
    total = n * price
    paid = next(b for b in (500, 1000, 2000, 5000, 10000, 20000, 50000, 100000) if b > total)
    q = rng.choice((
        f"{name} buys {n} {item} at {_money(price)} each and pays with {_money(paid)}. How much change is due?",
        f"{item.capitalize()} cost {_money(price)} each. {name} takes {n} and hands over {_money(paid)}. "
        "What change comes back?",
        f"How much change does {name} get after paying {_money(paid)} for {n} {item} at {_money(price)} apiece?",
    ))  # fmt: skip
    return q, f"{n} × {_money(price)} = {_money(total)}, and {_money(paid)} − {_money(total)} = {_money(paid - total)}."


def _travel(rng: Random) -> tuple[str, str]:
    vehicle, (low, high) = rng.choice((("train", (12, 30)), ("bus", (8, 18)), ("cyclist", (3, 6)), ("ferry", (5, 9)),
                                       ("truck", (10, 18)), ("runner", (2, 3))))  # fmt: skip
    speed, hours = 5 * rng.randint(low, high), rng.randint(2, 9)
    distance = speed * hours
    ask = rng.randrange(3)
    if ask == 0:
        q = f"A {vehicle} keeps a steady {speed} km/h for {hours} hours. How far does it go?"
    elif ask == 1:
        q = f"A {vehicle} covers {distance} km in {hours} hours. What is its average speed?"
    else:
        q = f"How long does a {vehicle} moving at {speed} km/h need for a trip of {distance} km?"
    return q, f"distance = speed × time, so {distance} km = {speed} km/h × {hours} h."


def _discount(rng: Random) -> tuple[str, str]:
    item, price, off = rng.choice(w.PRODUCTS), 100 * rng.randint(15, 400), rng.choice((10, 15, 20, 25, 30, 40, 50))
    sale = price * (100 - off) // 100
    if rng.random() < 0.5:
        q = f"{item.capitalize()} normally costs {_money(price)}. It is on sale for {off}% off. What is the sale price?"
        return q, f"{off}% of {_money(price)} is {_money(price - sale)}, so the sale price is {_money(sale)}."
    coupon = 100 * rng.choice((5, 10, 15))
    q = (f"A shop takes {off}% off {item} priced {_money(price)}, and then a coupon removes another "
         f"{_money(coupon)}. What is the final price?")  # fmt: skip
    return q, f"After {off}% off: {_money(sale)}; minus the coupon: {_money(sale - coupon)}."


def _share(rng: Random) -> tuple[str, str]:
    people, things = rng.randint(3, 12), rng.choice(("marbles", "stickers", "cookies", "seeds", "coins", "cards"))
    total = rng.randint(people * 3, people * 20)
    q = rng.choice((
        f"{total} {things} are shared equally among {people} children. How many does each get, and how many are left?",
        f"If {people} friends split {total} {things} as evenly as possible, how many does each friend get and how "
        "many remain?",
    ))  # fmt: skip
    return q, f"{total} ÷ {people} = {total // people} remainder {total % people}."


def _garden(rng: Random) -> tuple[str, str]:
    a, b, cost = rng.randint(3, 40), rng.randint(3, 40), rng.randint(4, 25)
    ask = rng.randrange(3)
    if ask == 0:
        return f"A rectangular garden is {a} m long and {b} m wide. What is its area?", f"{a} × {b} = {a * b} m²."
    if ask == 1:
        q = f"How much fencing is needed to go once around a {a} m by {b} m field?"
        return q, f"2 × ({a} + {b}) = {2 * (a + b)} m."
    q = f"Fencing costs ${cost} per metre. What does it cost to fence a yard of {a} m by {b} m?"
    return q, f"The perimeter is {2 * (a + b)} m, and {2 * (a + b)} × ${cost} = ${2 * (a + b) * cost}."


def _savings(rng: Random) -> tuple[str, str]:
    name, weekly, goal = rng.choice(w.NAMES), rng.randint(5, 60), rng.randint(100, 1500)
    have = rng.randint(0, goal // 3)
    weeks = math.ceil((goal - have) / weekly)
    q = rng.choice((
        f"{name} has ${have} and saves ${weekly} a week. How many weeks until {name} can afford something that "
        f"costs ${goal}?",
        f"Starting from ${have}, {name} puts away ${weekly} every week. After how many weeks will the savings reach "
        f"${goal}?",
    ))  # fmt: skip
    return q, f"{name} still needs ${goal - have}, and ${goal - have} ÷ ${weekly} rounds up to {weeks} weeks."


def _ages(rng: Random) -> tuple[str, str]:
    a, b = rng.sample(w.NAMES, 2)
    young, gap = rng.randint(3, 50), rng.randint(1, 30)
    q = f"{a} is {gap} years older than {b}. Together their ages add up to {2 * young + gap}. How old is each?"
    return q, f"{b} is ({2 * young + gap} − {gap}) ÷ 2 = {young}, and {a} is {young + gap}."


def _pipes(rng: Random) -> tuple[str, str]:
    a, b = rng.sample(range(2, 13), 2)
    together = Fraction(a * b, a + b)
    q = rng.choice((
        f"One pipe fills a tank in {a} hours and another in {b} hours. How long do they take together?",
        f"{rng.choice(w.NAMES)} can paint a fence in {a} hours; a friend needs {b} hours. Working together, how long "
        "does the job take?",
    ))  # fmt: skip
    return q, f"Together they do 1/{a} + 1/{b} of the job per hour, so it takes {together} ≈ {float(together):.2f} h."


def _recipe(rng: Random) -> tuple[str, str]:
    ingredient = rng.choice(("flour", "sugar", "butter", "rice", "oats", "cheese"))
    serves, grams, wanted = rng.randint(2, 8), 10 * rng.randint(5, 60), rng.randint(2, 20)
    q = f"A recipe for {serves} people needs {grams} g of {ingredient}. How much is needed for {wanted} people?"
    return q, f"{grams} ÷ {serves} × {wanted} = {_number(grams * wanted / serves)} g."


def _interest(rng: Random) -> tuple[str, str]:
    principal, rate, years = 100 * rng.randint(5, 200), rng.choice((2, 3, 4, 5, 6, 8)), rng.randint(2, 10)
    q = f"What simple interest does ${principal} earn at {rate}% a year over {years} years?"
    return q, f"${principal} × {rate}% × {years} = ${_number(principal * rate * years / 100)}."


def _average(rng: Random) -> tuple[str, str]:
    name, scores = rng.choice(w.NAMES), [rng.randint(55, 100) for _ in range(rng.randint(3, 6))]
    listed = ", ".join(map(str, scores))
    target = rng.randint(70, 95)
    need = target * (len(scores) + 1) - sum(scores)
    if 0 <= need <= 100 and rng.random() < 0.6:
        q = f"{name}'s test scores are {listed}. What score on the next test brings the average to {target}?"
        return q, f"The total must be {target} × {len(scores) + 1} = {target * (len(scores) + 1)}, so {need}."
    return (
        f"What is the average of the scores {listed}?",
        f"{sum(scores)} ÷ {len(scores)} = {_number(sum(scores) / len(scores))}.",
    )  # noqa: E501


def _clock(rng: Random) -> tuple[str, str]:
    start, minutes = rng.randint(6 * 60, 20 * 60), 5 * rng.randint(4, 60)
    end = start + minutes
    event = rng.choice(("meeting", "film", "train journey", "exam", "concert", "workshop"))
    q = f"A {event} starts at {start // 60:02d}:{start % 60:02d} and lasts {minutes} minutes. When does it end?"
    return q, f"{minutes} minutes after {start // 60:02d}:{start % 60:02d} is {end // 60 % 24:02d}:{end % 60:02d}."


def _consecutive(rng: Random) -> tuple[str, str]:
    n, first = rng.randint(3, 5), rng.randint(-10, 90)
    numbers = list(range(first, first + n))
    q = f"The sum of {n} consecutive integers is {sum(numbers)}. What are they?"
    return q, f"They are {', '.join(map(str, numbers))}."


def _reading(rng: Random) -> tuple[str, str]:
    name, pages, per_day = rng.choice(w.NAMES), rng.randint(120, 900), rng.randint(12, 60)
    q = f"{name} reads {per_day} pages a day. How many days will a {pages}-page book take?"
    return q, f"{pages} ÷ {per_day} rounds up to {math.ceil(pages / per_day)} days."


def _ratio(rng: Random) -> tuple[str, str]:
    (a, b), k = rng.sample(range(1, 8), 2), rng.randint(2, 30)
    first, second = rng.choice((("boys", "girls"), ("red beads", "blue beads"), ("cats", "dogs"), ("adults", "kids")))
    q = f"The ratio of {first} to {second} is {a}:{b}, and there are {(a + b) * k} in all. How many {second} are there?"
    return q, f"One part is {(a + b) * k} ÷ {a + b} = {k}, so there are {b * k} {second}."


def _equation(rng: Random) -> tuple[str, str]:
    a, x, b = rng.choice((2, 3, 4, 5, 6, 7, 8, 9, -3, -2)), rng.randint(-20, 20), rng.randint(-50, 50)
    lhs = f"{a}x {'+' if b >= 0 else '-'} {abs(b)}"
    q = rng.choice((f"Solve for x: {lhs} = {a * x + b}.", f"Find x if {lhs} = {a * x + b}."))
    return q, f"{a}x = {a * x + b - b}, so x = {x}."


def _expression(rng: Random) -> tuple[str, str]:
    a, b, c, d = (rng.randint(2, 30) for _ in range(4))
    forms = (
        (f"({a} + {b}) × {c} − {d}", (a + b) * c - d),
        (f"{a} × {b} − {c} × {d}", a * b - c * d),
        (f"{a} + {b} × {c} − {d}", a + b * c - d),
    )
    expression, value = rng.choice(forms)
    q = rng.choice((f"Compute {expression}.", f"What is {expression}?", f"Evaluate {expression} by hand."))
    return q, f"{expression} = {value}."


def _percent(rng: Random) -> tuple[str, str]:
    whole, p = 10 * rng.randint(2, 90), rng.choice((5, 10, 12, 15, 20, 25, 30, 40, 60, 75))
    part = whole * p / 100
    if rng.random() < 0.5:
        return f"What is {p}% of {whole}?", f"{whole} × {p} ÷ 100 = {_number(part)}."
    return f"{_number(part)} is what percent of {whole}?", f"{_number(part)} ÷ {whole} × 100 = {p}%."


def _unit_price(rng: Random) -> tuple[str, str]:
    item = rng.choice(w.SHOP_ITEMS)[0]
    (n, p), (m, q_) = ((rng.randint(2, 12), 10 * rng.randint(10, 200)) for _ in range(2))
    better = "the first" if p / n < q_ / m else "the second" if p / n > q_ / m else "neither"
    q = f"One pack has {n} {item} for {_money(p)}; another has {m} for {_money(q_)}. Which is cheaper per item?"
    return q, f"Per item: {_money(round(p / n))} against {_money(round(q_ / m))}, so {better} is cheaper."


def _fuel(rng: Random) -> tuple[str, str]:
    use, km, price = rng.randint(4, 12), 10 * rng.randint(5, 90), rng.randint(120, 220)
    liters = use * km / 100
    q = f"A car uses {use} litres per 100 km. A trip is {km} km and fuel costs {_money(price)} a litre. Fuel cost?"
    return q, f"{use} × {km} ÷ 100 = {_number(liters)} litres, costing {_money(round(liters * price))}."


#: Arithmetic word problem generators.
ARITHMETIC = (_change, _travel, _discount, _share, _garden, _savings, _ages, _pipes, _recipe, _interest, _average,
              _clock, _consecutive, _reading, _ratio, _equation, _expression, _percent, _unit_price, _fuel)  # fmt: skip


# Reasoning problems: each returns (question, solution).

#: Unit conversions: (from unit, to unit, factor); temperatures are separate (an offset, not a factor).
CONVERSIONS = (
    ("kilometres", "miles", 0.621371), ("miles", "kilometres", 1.609344), ("kilograms", "pounds", 2.204623),
    ("pounds", "kilograms", 0.453592), ("litres", "US gallons", 0.264172), ("inches", "centimetres", 2.54),
    ("feet", "metres", 0.3048), ("metres", "feet", 3.28084), ("hours", "seconds", 3600), ("days", "minutes", 1440),
    ("gibibytes", "mebibytes", 1024), ("kilometres per hour", "metres per second", 1 / 3.6),
    ("square metres", "square feet", 10.7639), ("cups", "millilitres", 236.588), ("ounces", "grams", 28.3495),
    ("hectares", "acres", 2.47105), ("weeks", "hours", 168), ("nautical miles", "kilometres", 1.852),
)  # fmt: skip


def convert(rng: Random, unit: tuple | None = None) -> tuple[str, str]:
    """A conversion of a random value: in ``unit`` (a :data:`CONVERSIONS` entry) if given, else in a random one or
    between Celsius and Fahrenheit."""
    if unit is None and rng.random() < 0.15:
        celsius = rng.randint(-30, 45)
        if rng.random() < 0.5:
            return f"Convert {celsius} °C to Fahrenheit.", f"{celsius} × 9/5 + 32 = {_number(celsius * 9 / 5 + 32)} °F."
        fahrenheit = celsius * 9 / 5 + 32
        return f"What is {_number(fahrenheit)} °F in Celsius?", f"({_number(fahrenheit)} − 32) × 5/9 = {celsius} °C."
    source, target, factor = unit or rng.choice(CONVERSIONS)
    value = rng.choice((rng.randint(2, 500), rng.randint(1, 99) / 4))
    q = rng.choice((f"How many {target} are in {_number(value)} {source}?", f"Convert {_number(value)} {source} to "
                    f"{target}.", f"{_number(value)} {source} is how many {target}?"))  # fmt: skip
    return q, f"{_number(value)} × {factor:g} = {_number(value * factor)} {target}."


def _order(rng: Random) -> tuple[str, str]:
    people = rng.sample(w.NAMES, rng.randint(3, 5))  # from most to least
    more, less, most, least = rng.choice((("taller", "shorter", "tallest", "shortest"),
                                          ("older", "younger", "oldest", "youngest"),
                                          ("faster", "slower", "fastest", "slowest")))  # fmt: skip
    facts = [f"{a} is {more} than {b}." if rng.random() < 0.5 else f"{b} is {less} than {a}."
             for a, b in zip(people, people[1:], strict=False)]  # fmt: skip
    rng.shuffle(facts)
    ask = rng.randrange(3)
    question = (f"Who is the {most}?", f"Who is the {least}?", f"List them from {most} to {least}.")[ask]
    answer = (people[0], people[-1], ", ".join(people))[ask]
    return " ".join(facts) + " " + question, f"Chaining the comparisons gives {', '.join(people)}, so: {answer}."


def _weekday(rng: Random) -> tuple[str, str]:
    today, n = rng.randrange(7), rng.randint(3, 400)
    if rng.random() < 0.5:
        q = f"If today is {w.DAYS[today]}, what day of the week will it be in {n} days?"
        return (
            q,
            f"{n} = 7 × {n // 7} + {n % 7}, so it is {n % 7} days after {w.DAYS[today]}: {w.DAYS[(today + n) % 7]}.",
        )
    q = f"Today is {w.DAYS[today]}. What day of the week was it {n} days ago?"
    return q, f"{n} = 7 × {n // 7} + {n % 7}, so it is {n % 7} days before {w.DAYS[today]}: {w.DAYS[(today - n) % 7]}."


def _sequence(rng: Random) -> tuple[str, str]:
    start, step = rng.randint(-10, 30), rng.randint(2, 12)
    kind = rng.randrange(4)
    if kind == 0:
        terms, rule = [start + step * i for i in range(6)], f"add {step}"
    elif kind == 1:
        ratio = rng.choice((2, 3, -2))
        terms, rule = [(start or 1) * ratio**i for i in range(6)], f"multiply by {ratio}"
    elif kind == 2:
        terms, rule = [(i + step) ** 2 for i in range(6)], "consecutive squares"
    else:
        terms = [rng.randint(1, 9), rng.randint(1, 9)]
        while len(terms) < 6:
            terms.append(terms[-1] + terms[-2])
        rule = "each term is the sum of the two before it"
    shown = ", ".join(map(str, terms[:5]))
    q = rng.choice((f"What comes next: {shown}, ...?", f"Find the next number in the sequence {shown}.",
                    f"Continue the pattern: {shown}. What is the rule?"))  # fmt: skip
    return q, f"The rule: {rule}. The next term is {terms[5]}."


def _dates(rng: Random) -> tuple[str, str]:
    year = rng.choice((2025, 2026, 2027))
    first = datetime.date(year, 1, 1) + datetime.timedelta(days=rng.randrange(300))
    second = first + datetime.timedelta(days=rng.randint(5, 64))
    name = lambda d: f"{w.MONTHS[d.month - 1]} {d.day}"
    q = rng.choice(
        (
            f"How many days are there from {name(first)} to {name(second)}, {year}?",
            f"A parcel was sent on {name(first)} and arrived on {name(second)}. How many days did it take?",
        )
    )
    return q, f"From {name(first)} to {name(second)} is {(second - first).days} days."


def _odd_one_out(rng: Random) -> tuple[str, str]:
    kind, other = rng.sample(sorted(w.WORD_GROUPS), 2)
    words = rng.sample(w.WORD_GROUPS[kind], 3)
    odd = rng.choice(w.WORD_GROUPS[other])
    shown = words + [odd]
    rng.shuffle(shown)
    q = rng.choice((f"Which word does not belong: {', '.join(shown)}? Explain why.",
                    f"Find the odd one out among {', '.join(shown)}."))  # fmt: skip
    return q, f"{odd} is the odd one out: it belongs to the group '{other}', the other words to '{kind}'."


def _made_up(rng: Random) -> str:
    return rng.choice(w.SYLLABLES) + rng.choice("aeiou") + rng.choice(w.ENDINGS) + "s"


def _syllogism(rng: Random) -> tuple[str, str]:
    a, b, c = _made_up(rng), _made_up(rng), _made_up(rng)
    kind = rng.randrange(3)
    if kind == 0:
        return (
            f"All {a} are {b}. All {b} are {c}. Are all {a} {c}?",
            f"Yes: every {a[:-1]} is a {b[:-1]}, hence a {c[:-1]}.",
        )  # noqa: E501
    if kind == 1:
        q = f"All {a} are {b}. Some {b} are {c}. Must some {a} be {c}?"
        return q, f"No: the {b} that are {c} need not include any {a}."
    return (
        f"No {a} are {b}. All {c} are {a}. Can one of the {c} be one of the {b}?",
        f"No: every {c[:-1]} is a {a[:-1]}, and no {a[:-1]} is a {b[:-1]}.",
    )  # noqa: E501


def _letters(rng: Random) -> tuple[str, str]:
    word = rng.choice([x for group in sorted(w.WORD_GROUPS) for x in w.WORD_GROUPS[group]] + list(w.CITIES))
    letter = rng.choice(sorted(set(word.lower()) - {" "}))
    q = f"How many times does the letter '{letter}' appear in the word '{word}'?"
    return q, f"'{letter}' appears {word.lower().count(letter)} time(s) in '{word}'."


def _marbles(rng: Random) -> tuple[str, str]:
    counts = {color: rng.randint(1, 12) for color in ("red", "blue", "green")}
    color = rng.choice(sorted(counts))
    p = Fraction(counts[color], sum(counts.values()))
    bag = ", ".join(f"{n} {c}" for c, n in counts.items())
    return (
        f"A bag holds {bag} marbles. One is drawn at random. What is the chance it is {color}?",
        f"{counts[color]} of {sum(counts.values())}, so {p}.",
    )  # noqa: E501


def _fractions(rng: Random) -> tuple[str, str]:
    x, y = (Fraction(rng.randint(1, d - 1), d) for d in (rng.randint(2, 12), rng.randint(2, 12)))
    if x == y:
        return f"Are {x} and {y} equal?", f"Yes, both equal {x}."
    q = rng.choice((f"Which is larger, {x} or {y}?", f"Compare {x} and {y}: which is bigger, and by how much?"))
    return q, f"{max(x, y)} is larger by {abs(x - y)}."


#: Reasoning problem generators.
REASONING = (convert, _order, _weekday, _sequence, _dates, _odd_one_out, _syllogism, _letters, _marbles, _fractions)


# Texts: sentences to translate, passages of facts to extract from or answer questions on.


def everyday_sentence(rng: Random) -> str:
    """One sentence of everyday English with random names, places and days."""
    name, city, day, job = rng.choice(w.NAMES), rng.choice(w.CITIES), rng.choice(w.DAYS), rng.choice(w.JOBS)
    return rng.choice((
        f"{name} is taking the train to {city} on {day} to visit a friend who works as {w.with_article(job)}.",
        f"Could you tell me where the nearest pharmacy is? I think I left my map at the hotel in {city}.",
        f"The museum in {city} is closed on {day}s, so we will go to the market instead.",
        f"My sister became {w.with_article(job)} last year, and she says the first months were the hardest.",
        f"Please remember to water the plants while I am away until {day}.",
        f"We are looking for {w.with_article(job)} who enjoys working with people and learning new things.",
        f"I would like to book a table for {rng.randint(2, 8)} people at seven o'clock on {day}.",
        f"The weather in {city} was so warm that we ate dinner outside every evening.",
        f"{name} wrote that {rng.choice(w.PRODUCTS)} was the best present {name} had ever received.",
        f"If the bus is late again on {day}, I will ride my bicycle to work.",
    ))  # fmt: skip


def _company(rng: Random) -> str:
    return f"{rng.choice(w.COMPANY_WORDS)}{rng.choice(('', ' ', ''))}{rng.choice(w.COMPANY_KINDS)}"


def fact_passage(rng: Random) -> tuple[str, dict]:
    """A generated text and the facts it states, keyed by kind: ``people`` (name -> age, city, job) or ``orders``."""
    if rng.random() < 0.6:
        people = {}
        for name in rng.sample(w.NAMES, rng.randint(3, 5)):
            people[name] = {"age": rng.randint(19, 78), "city": rng.choice(w.CITIES), "job": rng.choice(w.JOBS)}
        forms = ("{n}, a {a}-year-old {j} from {c}, {x}.", "{n} works as {aj} in {c}, turned {a} this year and {x}.",
                 "Then there is {n} ({a}), {aj} living in {c}, who {x}.")  # fmt: skip
        hobbies = ("joined the project in spring", "organises the monthly meetings", "prefers to work early",
                   "brought cakes on the first day", "has two dogs", "is learning to play the cello",
                   "cycles to work every day", "moved there recently")  # fmt: skip
        sentences = [
            rng.choice(forms).format(
                n=n, a=p["age"], j=p["job"], aj=w.with_article(p["job"]), c=p["city"], x=rng.choice(hobbies)
            )
            for n, p in people.items()
        ]
        intro = rng.choice(("Meet the new volunteers.", "Notes from the team introduction:", "Our club's members:"))
        return intro + " " + " ".join(sentences), {"people": people}
    shop, customer = _company(rng), rng.choice(w.NAMES)
    order = {item: (rng.randint(1, 6), 5 * rng.randint(low // 5, high // 5))
             for item, low, high in rng.sample(w.SHOP_ITEMS, rng.randint(2, 4))}  # fmt: skip
    lines = [f"{n} {item} at {_money(price)} each" for item, (n, price) in order.items()]
    date = f"{rng.choice(w.MONTHS)} {rng.randint(1, 28)}"
    text = (f"On {date}, {customer} ordered from {shop}: " + "; ".join(lines) + f". The parcel was sent to "
            f"{rng.choice(w.CITIES)} by {rng.choice(('courier', 'post', 'express delivery'))}.")  # fmt: skip
    return text, {"orders": order}


def fact_question(rng: Random, facts: dict) -> tuple[str, str]:
    """A question about a generated passage and its answer."""
    if "people" in facts:
        people = facts["people"]
        name = rng.choice(sorted(people))
        oldest = max(people, key=lambda n: people[n]["age"])
        return rng.choice((
            (f"How old is {name}?", f"{name} is {people[name]['age']}."),
            (f"Where does {name} live?", f"{name} lives in {people[name]['city']}."),
            (f"What is {name}'s job?", f"{name} is {w.with_article(people[name]['job'])}."),
            ("Who is the oldest person mentioned?", f"{oldest}, who is {people[oldest]['age']}."),
        ))  # fmt: skip
    total = sum(n * price for n, price in facts["orders"].values())
    item = rng.choice(sorted(facts["orders"]))
    return rng.choice((
        ("What is the total cost of the order?", f"The total is {_money(total)}."),
        (f"How many {item} were ordered?", f"{facts['orders'][item][0]} {item}."),
    ))  # fmt: skip
