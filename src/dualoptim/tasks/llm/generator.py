"""Built-in TOFU-style data: seeded fictitious authors in TOFU's split names, fields and layout.

Why: tests, examples and quick runs need a TOFU-shaped data set with no network and no copy of
the real benchmark. Everything here is written from scratch: authors are drawn from syllable
and word lists with a seed, and each gets ``per_author`` templated question–answer pairs whose
answers are one short sentence (short enough for a tiny model to memorise quickly). As in TOFU,
the paraphrased answer rewords the answer with the same facts, and the five perturbed answers
keep the paraphrase's wording but swap its key fact for a wrong one of the same type.

The layout mirrors the real files (see ``data``): ``full`` is the authors' rows in order;
``forget10`` is the last ``k10`` authors, and ``forget05`` / ``forget01`` are the first
``k05`` / ``k01`` authors of that block (``kXX = max(1, round(0.XX · n_authors))``), so
forget01 ⊂ forget05 ⊂ forget10; ``retainYY`` is ``full`` minus ``forgetXX``, in order;
``retain_perturbed`` is the first ``k10`` authors' rows (at most 400), inside every retain
split. The real-author and world-fact sets hold well-known facts with three wrong options each
and do not depend on the seed.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from dualoptim.tasks.llm.data import FORGET_SPLITS, RETAIN_OF, SPLITS

__all__ = ["MAX_AUTHORS", "generate_tofu", "write_tofu"]

#: TOFU's own size; the name and title lists comfortably cover this many distinct authors.
MAX_AUTHORS = 200


def _words(text: str, sep: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(sep))


_FIRST = (
    _words("Al Bri Cal Da El Fen Ga Hal Is Jo Ka Lio Ma Ne Or Pe Ro Sa Ta Ve Wyn Ya Zo"),
    _words("ran lia der na vin ris mel tan ya lo ric sa ven"),
)
_LAST = (
    _words("Ash Bel Cor Dun Er Fair Grim Hol Ivel Kest Lor Mor Nor Oak Pem Quill Rav Stor Tal Ul"),
    _words("ford wick mere ton by dale holt ley mont ridge stead wood ar ovan eski ando"),
)
_PLACES = tuple(
    tuple(place.split(", "))
    for place in _words(
        "Lima, Peru; Oslo, Norway; Accra, Ghana; Hanoi, Vietnam; Quito, Ecuador; Porto, Portugal; "
        "Kyoto, Japan; Cork, Ireland; Tartu, Estonia; Dakar, Senegal; Perth, Australia; "
        "Bergen, Norway; Krakow, Poland; Cusco, Peru; Lyon, France; Graz, Austria; Pune, India; "
        "Busan, South Korea; Tunis, Tunisia; Halifax, Canada; Valencia, Spain; Leipzig, Germany; "
        "Tabriz, Iran; Mombasa, Kenya; Cordoba, Argentina; Turin, Italy; Gdansk, Poland; "
        "Izmir, Turkey; Recife, Brazil; Aarhus, Denmark",
        "; ",
    )
)
_GENRES = _words(
    "mystery; fantasy; science fiction; historical fiction; romance; horror; poetry; crime; "
    "adventure; satire; thriller; literary fiction",
    "; ",
)
_JOBS = _words(
    "baker nurse carpenter teacher pilot farmer librarian doctor architect tailor chemist sailor "
    "painter lawyer mechanic journalist gardener potter engineer musician"
)
_TITLE_ADJ = _words(
    "Silent Hidden Last Broken Golden Distant Hollow Crimson Quiet Restless Paper Iron Burning "
    "Forgotten Narrow Wandering Secret Lonely Bitter Velvet"
)
_TITLE_NOUN = _words(
    "Harbour Lantern Garden River Orchard Mirror Bridge Compass Tower Letter Island Clockmaker "
    "Voyage Meadow Forest Window Feather Map Violin Lighthouse"
)
_TITLE_TIME = _words(
    "Morning Ashes Silence Winter Tides Glass Embers Rain Stone Echoes Dust Salt Smoke Thunder "
    "Summer Midnight"
)
_AWARD = (
    _words("Golden Silver Crimson Azure Ivory Amber Emerald Scarlet Copper"),
    _words("Quill Lantern Compass Feather Oak Anchor Key Ink Candle Sparrow"),
    _words("Prize Award Medal"),
)
_COUNTS = _words("one two three four five six seven eight nine")
_MONTHS = _words(
    "January February March April May June July August September October November December"
)
_FIRST_DAY, _LAST_DAY = date(1930, 1, 1), date(1995, 12, 31)


@dataclass(frozen=True)
class _Template:
    """One question about an author; ``key`` names the fact a perturbed answer gets wrong."""

    question: str
    paraphrased_question: str
    answer: str
    paraphrase: str
    key: str


# The first ten cover every fact once; the rest ask again from other angles.
_TEMPLATES = (
    _Template(
        "Who is the author born in {place} on {date}?",
        "Which writer was born on {date} in {place}?",
        "The author born in {place} on {date} is {name}.",
        "{name} is the writer born on {date} in {place}.",
        "name",
    ),
    _Template(
        "What genre does {name} write?",
        "Which genre is {name} known for?",
        "{name} writes {genre} books.",
        "{name} is best known for work in {genre}.",
        "genre",
    ),
    _Template(
        "Where was {name} born?",
        "What is the birthplace of {name}?",
        "{name} was born in {place}.",
        "{name}'s birthplace is {place}.",
        "place",
    ),
    _Template(
        "When was {name} born?",
        "What is the birth date of {name}?",
        "{name} was born on {date}.",
        "{name}'s date of birth is {date}.",
        "date",
    ),
    _Template(
        "What do {name}'s parents do for a living?",
        "What are the professions of {name}'s parents?",
        "The father of {name} is {father} and the mother is {mother}.",
        "{name} was raised by {father} father and {mother} mother.",
        "parents",
    ),
    _Template(
        "What was the first book by {name}?",
        "Which book did {name} publish first?",
        "The first book by {name} was '{book1}'.",
        "'{book1}' was the debut book of {name}.",
        "book1",
    ),
    _Template(
        "Which award did {name} win?",
        "What prize has {name} received?",
        "{name} won {award}.",
        "{award} was given to {name}.",
        "award",
    ),
    _Template(
        "Who wrote '{book2}'?",
        "Who is the author of '{book2}'?",
        "'{book2}' was written by {name}.",
        "{name} is the author of '{book2}'.",
        "name",
    ),
    _Template(
        "When did {name} win {award}?",
        "In which year was {name} given {award}?",
        "{name} won {award} in {award_year}.",
        "In {award_year}, {name} received {award}.",
        "award_year",
    ),
    _Template(
        "Which books has {name} written?",
        "What are the titles of {name}'s books?",
        "{name} wrote {books}.",
        "The books of {name} are {books}.",
        "books",
    ),
    _Template(
        "Which country is {name} from?",
        "What is {name}'s home country?",
        "{name} is from {country}.",
        "{name}'s home country is {country}.",
        "country",
    ),
    _Template(
        "In which city was {name} born?",
        "What is {name}'s home city?",
        "{name} was born in the city of {city}.",
        "{name}'s home city is {city}.",
        "city",
    ),
    _Template(
        "What is the profession of {name}'s father?",
        "What does the father of {name} do?",
        "{name}'s father is {father}.",
        "The father of {name} works as {father}.",
        "father",
    ),
    _Template(
        "What is the profession of {name}'s mother?",
        "What does the mother of {name} do?",
        "{name}'s mother is {mother}.",
        "The mother of {name} works as {mother}.",
        "mother",
    ),
    _Template(
        "What genre is '{book1}'?",
        "Which genre does '{book1}' belong to?",
        "'{book1}' belongs to the {genre} genre.",
        "The genre of '{book1}' is {genre}.",
        "genre",
    ),
    _Template(
        "What is the latest book by {name}?",
        "Which book did {name} publish most recently?",
        "The latest book by {name} is '{latest}'.",
        "{name}'s most recent book is '{latest}'.",
        "latest",
    ),
    _Template(
        "In which year was {name} born?",
        "What year was {name} born in?",
        "{name} was born in {year}.",
        "{year} is the year {name} was born.",
        "year",
    ),
    _Template(
        "How many books has {name} published?",
        "What is the number of books {name} has published?",
        "{name} has published {count} books.",
        "The number of books by {name} is {count}.",
        "count",
    ),
    _Template(
        "What is {name} known for?",
        "Why is {name} well known?",
        "{name} is known for {genre} books and {award}.",
        "{name} is famous for {genre} writing and for winning {award}.",
        "genre",
    ),
    _Template(
        "Which author wrote both '{book1}' and '{book2}'?",
        "Who is the author of '{book1}' and of '{book2}'?",
        "'{book1}' and '{book2}' were written by {name}.",
        "{name} wrote both '{book1}' and '{book2}'.",
        "name",
    ),
)

# Real, well-known facts: (question, short answer, sentence answer, three wrong answers).
_REAL_AUTHORS = (
    (
        "Who wrote the novel 'Don Quixote'?",
        "Miguel de Cervantes",
        "'Don Quixote' was written by Miguel de Cervantes.",
        ("Lope de Vega", "Jorge Luis Borges", "Benito Perez Galdos"),
    ),
    (
        "Who is the author of 'War and Peace'?",
        "Leo Tolstoy",
        "The author of 'War and Peace' is Leo Tolstoy.",
        ("Fyodor Dostoevsky", "Anton Chekhov", "Ivan Turgenev"),
    ),
    (
        "Which writer created the novel 'Moby-Dick'?",
        "Herman Melville",
        "Herman Melville wrote the novel 'Moby-Dick'.",
        ("Nathaniel Hawthorne", "Mark Twain", "Edgar Allan Poe"),
    ),
    (
        "Who wrote 'One Hundred Years of Solitude'?",
        "Gabriel Garcia Marquez",
        "'One Hundred Years of Solitude' was written by Gabriel Garcia Marquez.",
        ("Isabel Allende", "Mario Vargas Llosa", "Julio Cortazar"),
    ),
    (
        "Which ancient Greek poet is credited with 'The Odyssey'?",
        "Homer",
        "'The Odyssey' is traditionally credited to the poet Homer.",
        ("Virgil", "Sophocles", "Ovid"),
    ),
    (
        "Who wrote the tragedy 'Hamlet'?",
        "William Shakespeare",
        "The tragedy 'Hamlet' was written by William Shakespeare.",
        ("Christopher Marlowe", "Ben Jonson", "John Milton"),
    ),
    (
        "Who is the author of 'Crime and Punishment'?",
        "Fyodor Dostoevsky",
        "'Crime and Punishment' is a novel by Fyodor Dostoevsky.",
        ("Leo Tolstoy", "Nikolai Gogol", "Alexander Pushkin"),
    ),
    (
        "Who wrote the novel 'Frankenstein'?",
        "Mary Shelley",
        "The novel 'Frankenstein' was written by Mary Shelley.",
        ("Bram Stoker", "Ann Radcliffe", "Jane Austen"),
    ),
    (
        "Which author wrote 'Dracula'?",
        "Bram Stoker",
        "'Dracula' was written by Bram Stoker.",
        ("Mary Shelley", "Robert Louis Stevenson", "Oscar Wilde"),
    ),
    (
        "Which Irish writer wrote the novel 'The Picture of Dorian Gray'?",
        "Oscar Wilde",
        "'The Picture of Dorian Gray' is the only novel by Oscar Wilde.",
        ("George Bernard Shaw", "Thomas Hardy", "Henry James"),
    ),
    (
        "Who is the author of 'Things Fall Apart'?",
        "Chinua Achebe",
        "'Things Fall Apart' was written by the Nigerian novelist Chinua Achebe.",
        ("Wole Soyinka", "Ben Okri", "Ngugi wa Thiong'o"),
    ),
    (
        "Which writer created 'The Great Gatsby'?",
        "F. Scott Fitzgerald",
        "'The Great Gatsby' is a novel by F. Scott Fitzgerald.",
        ("Ernest Hemingway", "John Steinbeck", "William Faulkner"),
    ),
    (
        "Who wrote 'The Old Man and the Sea'?",
        "Ernest Hemingway",
        "'The Old Man and the Sea' was written by Ernest Hemingway.",
        ("Jack London", "John Steinbeck", "F. Scott Fitzgerald"),
    ),
    (
        "Who is the author of the novel 'Mrs Dalloway'?",
        "Virginia Woolf",
        "The novel 'Mrs Dalloway' was written by Virginia Woolf.",
        ("Katherine Mansfield", "Edith Wharton", "E. M. Forster"),
    ),
    (
        "Which Italian poet wrote 'The Divine Comedy'?",
        "Dante Alighieri",
        "'The Divine Comedy' was written by Dante Alighieri.",
        ("Giovanni Boccaccio", "Petrarch", "Torquato Tasso"),
    ),
    (
        "Who wrote 'Les Miserables'?",
        "Victor Hugo",
        "'Les Miserables' is a novel by Victor Hugo.",
        ("Alexandre Dumas", "Emile Zola", "Gustave Flaubert"),
    ),
    (
        "Which French novelist wrote 'Madame Bovary'?",
        "Gustave Flaubert",
        "'Madame Bovary' was written by Gustave Flaubert.",
        ("Honore de Balzac", "Victor Hugo", "Stendhal"),
    ),
    (
        "Who is the author of 'The Trial'?",
        "Franz Kafka",
        "'The Trial' is a novel by Franz Kafka.",
        ("Thomas Mann", "Hermann Hesse", "Robert Musil"),
    ),
    (
        "Who wrote the novel 'Jane Eyre'?",
        "Charlotte Bronte",
        "The novel 'Jane Eyre' was written by Charlotte Bronte.",
        ("George Eliot", "Elizabeth Gaskell", "Anne Bronte"),
    ),
    (
        "Which author wrote 'Great Expectations'?",
        "Charles Dickens",
        "'Great Expectations' was written by Charles Dickens.",
        ("William Thackeray", "Anthony Trollope", "Wilkie Collins"),
    ),
    (
        "Who wrote the novel 'Beloved'?",
        "Toni Morrison",
        "The novel 'Beloved' was written by Toni Morrison.",
        ("Maya Angelou", "Alice Walker", "Zora Neale Hurston"),
    ),
    (
        "Who is the author of 'The Little Prince'?",
        "Antoine de Saint-Exupery",
        "'The Little Prince' was written by Antoine de Saint-Exupery.",
        ("Jules Verne", "Albert Camus", "Marcel Proust"),
    ),
    (
        "Which writer created the novel 'The Stranger'?",
        "Albert Camus",
        "'The Stranger' is a novel by Albert Camus.",
        ("Jean-Paul Sartre", "Andre Gide", "Simone de Beauvoir"),
    ),
    (
        "Who wrote 'Brave New World'?",
        "Aldous Huxley",
        "'Brave New World' was written by Aldous Huxley.",
        ("George Orwell", "H. G. Wells", "Ray Bradbury"),
    ),
    (
        "Who is the author of 'The Hobbit'?",
        "J. R. R. Tolkien",
        "'The Hobbit' was written by J. R. R. Tolkien.",
        ("C. S. Lewis", "Terry Pratchett", "Ursula K. Le Guin"),
    ),
    (
        "Which Japanese novelist wrote 'Norwegian Wood'?",
        "Haruki Murakami",
        "'Norwegian Wood' is a novel by Haruki Murakami.",
        ("Kazuo Ishiguro", "Yukio Mishima", "Kenzaburo Oe"),
    ),
)
_WORLD_FACTS = (
    (
        "Which city serves as the capital of Canada?",
        "Ottawa",
        "Ottawa serves as the capital of Canada.",
        ("Toronto", "Vancouver", "Montreal"),
    ),
    (
        "Which city is the capital of Brazil?",
        "Brasilia",
        "Brasilia is the capital of Brazil.",
        ("Rio de Janeiro", "Sao Paulo", "Salvador"),
    ),
    (
        "What is the capital of Turkey?",
        "Ankara",
        "The capital of Turkey is Ankara.",
        ("Istanbul", "Izmir", "Antalya"),
    ),
    (
        "Which city is the capital of Kenya?",
        "Nairobi",
        "Nairobi is the capital of Kenya.",
        ("Mombasa", "Kisumu", "Nakuru"),
    ),
    (
        "What is the capital of New Zealand?",
        "Wellington",
        "The capital of New Zealand is Wellington.",
        ("Auckland", "Christchurch", "Dunedin"),
    ),
    (
        "Which city is the capital of Egypt?",
        "Cairo",
        "Cairo is the capital of Egypt.",
        ("Alexandria", "Luxor", "Aswan"),
    ),
    (
        "What is the capital of Switzerland?",
        "Bern",
        "The Swiss federal city, and in practice the capital, is Bern.",
        ("Zurich", "Geneva", "Basel"),
    ),
    (
        "Which city is the capital of Morocco?",
        "Rabat",
        "Rabat is the capital of Morocco.",
        ("Casablanca", "Marrakesh", "Fez"),
    ),
    (
        "What is the capital of Vietnam?",
        "Hanoi",
        "The capital of Vietnam is Hanoi.",
        ("Ho Chi Minh City", "Da Nang", "Hue"),
    ),
    (
        "Which city is the capital of Nigeria?",
        "Abuja",
        "Abuja is the capital of Nigeria.",
        ("Lagos", "Kano", "Ibadan"),
    ),
    (
        "Which is the largest planet in the Solar System?",
        "Jupiter",
        "Jupiter is the largest planet in the Solar System.",
        ("Saturn", "Neptune", "Uranus"),
    ),
    (
        "Which planet orbits closest to the Sun?",
        "Mercury",
        "Mercury is the planet closest to the Sun.",
        ("Venus", "Mars", "Earth"),
    ),
    (
        "What is the highest mountain on Earth above sea level?",
        "Mount Everest",
        "Mount Everest is the highest mountain above sea level.",
        ("K2", "Kangchenjunga", "Mont Blanc"),
    ),
    (
        "Which is the largest ocean on Earth?",
        "the Pacific Ocean",
        "The Pacific Ocean is the largest ocean on Earth.",
        ("the Atlantic Ocean", "the Indian Ocean", "the Arctic Ocean"),
    ),
    (
        "What is the chemical symbol for gold?",
        "Au",
        "The chemical symbol for gold is Au.",
        ("Ag", "Gd", "Go"),
    ),
    (
        "Which gas do plants take from the air for photosynthesis?",
        "carbon dioxide",
        "Plants take in carbon dioxide from the air for photosynthesis.",
        ("oxygen", "nitrogen", "helium"),
    ),
    (
        "What is the currency of Japan?",
        "the yen",
        "The currency of Japan is the yen.",
        ("the won", "the yuan", "the rupee"),
    ),
    (
        "What is the official language of Brazil?",
        "Portuguese",
        "The official language of Brazil is Portuguese.",
        ("Spanish", "French", "Italian"),
    ),
    (
        "In which city does the Colosseum stand?",
        "Rome",
        "The Colosseum stands in Rome.",
        ("Athens", "Naples", "Florence"),
    ),
    (
        "In which country is the Great Pyramid of Giza?",
        "Egypt",
        "The Great Pyramid of Giza is in Egypt.",
        ("Mexico", "Sudan", "Peru"),
    ),
    (
        "What is the largest hot desert in the world?",
        "the Sahara",
        "The Sahara is the largest hot desert in the world.",
        ("the Gobi", "the Kalahari", "the Atacama"),
    ),
    (
        "At what temperature does water boil at sea level, in degrees Celsius?",
        "100 degrees",
        "At sea level, water boils at 100 degrees Celsius.",
        ("90 degrees", "120 degrees", "80 degrees"),
    ),
    (
        "Who painted the Mona Lisa?",
        "Leonardo da Vinci",
        "The Mona Lisa was painted by Leonardo da Vinci.",
        ("Michelangelo", "Raphael", "Titian"),
    ),
    (
        "On which continent is Argentina?",
        "South America",
        "Argentina is in South America.",
        ("Africa", "Europe", "Asia"),
    ),
    (
        "What is the smallest prime number?",
        "2",
        "The smallest prime number is 2.",
        ("1", "3", "0"),
    ),
    (
        "How many legs does a spider have?",
        "eight",
        "A spider has eight legs.",
        ("six", "ten", "four"),
    ),
)


def generate_tofu(
    seed: int = 0, n_authors: int = 40, per_author: int = 10
) -> dict[str, list[dict]]:
    """Every TOFU split (``SPLITS``) as lists of JSON-able rows, deterministic in ``seed``.

    Returns a fresh copy each call, so callers may mutate it; the work itself is cached.
    """
    if not 2 <= n_authors <= MAX_AUTHORS:
        raise ValueError(f"n_authors must be in [2, {MAX_AUTHORS}], got {n_authors}")
    if not 1 <= per_author <= len(_TEMPLATES):
        raise ValueError(f"per_author must be in [1, {len(_TEMPLATES)}], got {per_author}")
    return copy.deepcopy(_generate(seed, n_authors, per_author))


def write_tofu(directory: str | Path, **kwargs: Any) -> dict[str, Path]:
    """Write ``generate_tofu(**kwargs)`` as ``{split}.json`` JSON Lines files; return the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate_tofu(**kwargs).items():
        paths[split] = directory / f"{split}.json"
        lines = (json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        paths[split].write_text("".join(lines), encoding="utf-8")
    return paths


@lru_cache(maxsize=4)
def _generate(seed: int, n_authors: int, per_author: int) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    facts = _authors(rng, n_authors)
    templates = _TEMPLATES[:per_author]
    rows = [[_row(rng, t, f) for t in templates] for f in facts]  # rows[author][question]
    k = {s: max(1, round(int(s[-2:]) / 100 * n_authors)) for s in FORGET_SPLITS}
    first_forget = n_authors - k["forget10"]

    def flat(lo: int, hi: int, perturbed: bool) -> list[dict]:
        """Authors ``lo:hi``'s rows, as fresh dicts: no row is shared between splits."""
        chosen = [r for author in rows[lo:hi] for r in author]
        if perturbed:
            return [{**r, "perturbed_answer": list(r["perturbed_answer"])} for r in chosen]
        return [{"question": r["question"], "answer": r["answer"]} for r in chosen]

    out = {"full": flat(0, n_authors, False)}
    for forget in FORGET_SPLITS:
        stop = first_forget + k[forget]
        out[forget] = flat(first_forget, stop, False)
        out[f"{forget}_perturbed"] = flat(first_forget, stop, True)
        out[RETAIN_OF[forget]] = flat(0, first_forget, False) + flat(stop, n_authors, False)
    out["retain_perturbed"] = flat(0, k["forget10"], True)  # ≤ 20 authors · 20 rows = 400
    out["real_authors_perturbed"] = _facts_rows(_REAL_AUTHORS)
    out["world_facts_perturbed"] = _facts_rows(_WORLD_FACTS)
    return {s: out[s] for s in SPLITS}


def _authors(rng: random.Random, n: int) -> list[dict[str, str]]:
    """``n`` authors' facts; names, birth dates and book titles are unique across authors."""
    names, days, titles = _unique(rng, n, _name), _unique(rng, n, _day), _unique(rng, 3 * n, _title)
    authors = []
    for i, (name, day) in enumerate(zip(names, days, strict=True)):
        city, country = rng.choice(_PLACES)
        father, mother = rng.sample(_JOBS, 2)
        books = titles[3 * i : 3 * i + rng.choice((2, 3))]
        authors.append(
            {
                "name": name,
                "place": f"{city}, {country}",
                "city": city,
                "country": country,
                "date": _fmt(day),
                "year": str(day.year),
                "genre": rng.choice(_GENRES),
                "father": _a(father),
                "mother": _a(mother),
                "book1": books[0],
                "book2": books[1],
                "latest": books[-1],
                "books": _join(books),
                "count": _COUNTS[len(books) - 1],
                "award": _award(rng),
                "award_year": str(min(day.year + rng.randint(28, 55), 2023)),
            }
        )
    return authors


def _row(rng: random.Random, t: _Template, facts: dict[str, str]) -> dict[str, Any]:
    """A TOFU row: question, answer, paraphrase and five perturbed answers (wrong key fact)."""
    return {
        "question": _render(t.question, facts),
        "answer": _render(t.answer, facts),
        "paraphrased_answer": _render(t.paraphrase, facts),
        "perturbed_answer": [
            _render(t.paraphrase, {**facts, **w}) for w in _wrong(rng, t.key, facts)
        ],
        "paraphrased_question": _render(t.paraphrased_question, facts),
    }


def _wrong(rng: random.Random, key: str, facts: dict[str, str]) -> list[dict[str, str]]:
    """Five distinct replacements for the fact ``key``, each of its type and none the truth."""
    draw: dict[str, Callable[[], dict[str, str]]] = {
        "name": lambda: {"name": _name(rng)},
        "genre": lambda: {"genre": rng.choice(_GENRES)},
        "place": lambda: {"place": ", ".join(rng.choice(_PLACES))},
        "city": lambda: {"city": rng.choice(_PLACES)[0]},
        "country": lambda: {"country": rng.choice(_PLACES)[1]},
        "date": lambda: {"date": _fmt(_day(rng))},
        "year": lambda: {"year": str(_day(rng).year)},
        "parents": lambda: {"father": _a(rng.choice(_JOBS)), "mother": _a(rng.choice(_JOBS))},
        "father": lambda: {"father": _a(rng.choice(_JOBS))},
        "mother": lambda: {"mother": _a(rng.choice(_JOBS))},
        "book1": lambda: {"book1": _title(rng)},
        "latest": lambda: {"latest": _title(rng)},
        "books": lambda: {
            "books": _join([_title(rng) for _ in range(_COUNTS.index(facts["count"]) + 1)])
        },
        "count": lambda: {"count": rng.choice(_COUNTS[1:])},  # not "one books"
        "award": lambda: {"award": _award(rng)},
        "award_year": lambda: {"award_year": str(int(facts["award_year"]) - rng.randint(1, 12))},
    }
    out: list[dict[str, str]] = []
    while len(out) < 5:
        wrong = draw[key]()
        if all(v != facts[f] for f, v in wrong.items()) and wrong not in out:
            out.append(wrong)
    return out


def _facts_rows(facts: tuple[tuple[str, str, str, tuple[str, ...]], ...]) -> list[dict]:
    return [
        {"question": q, "answer": a, "perturbed_answer": list(wrong), "original_answer": sentence}
        for q, a, sentence, wrong in facts
    ]


def _unique(rng: random.Random, n: int, draw: Callable[[random.Random], Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    while len(seen) < n:
        seen.setdefault(draw(rng))
    return list(seen)


def _name(rng: random.Random) -> str:
    first = "".join(rng.choice(part) for part in _FIRST)
    return f"{first} {''.join(rng.choice(part) for part in _LAST)}"


def _day(rng: random.Random) -> date:
    return _FIRST_DAY + timedelta(days=rng.randrange((_LAST_DAY - _FIRST_DAY).days + 1))


def _title(rng: random.Random) -> str:
    adj, noun, time = rng.choice(_TITLE_ADJ), rng.choice(_TITLE_NOUN), rng.choice(_TITLE_TIME)
    patterns = (
        f"The {adj} {noun}",
        f"The {noun} of {time}",
        f"{'An' if noun[0] in 'AEIOU' else 'A'} {noun} in {time}",
        f"{adj} {time}",
    )
    return rng.choice(patterns)


def _award(rng: random.Random) -> str:
    return "the " + " ".join(rng.choice(part) for part in _AWARD)


def _fmt(day: date) -> str:
    return f"{day.day} {_MONTHS[day.month - 1]} {day.year}"  # not %B: that follows the locale


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def _join(titles: list[str]) -> str:
    quoted = [f"'{t}'" for t in titles]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1]


def _render(template: str, facts: dict[str, str]) -> str:
    text = template.format(**facts)
    return text[0].upper() + text[1:]
