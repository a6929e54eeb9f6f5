"""A world where the rules GEPA learns help one segment and break another (the segment gate's
end-to-end test, tests/e2e/test_segment_gate.py).

**The task model** is a user `predict_fn` (policy `predict_fn: tests.e2e.segment_world:<fn>`,
one function per prompt name, since a predict_fn loads its own prompt). It reads its
instructions like the offline support router (optimization/offline/skills.py): a rule
(`Rule: if the ticket mentions "app" or ..., the category is technical.`) whose keywords occur
in the ticket decides the category. Unlike that router it reads German: a German ticket that no
rule matches is routed by its German words, rightly; an English ticket that no rule matches
gets the router's plausible wrong category.

**The feed**: English tickets (`support_tickets`) and German ones, each trace labelled by
the attribute `language` (`en`, `de`); the model sees only the ticket. The seed prompt has
one rule ("crash"), so the baseline gets English tickets wrong (but the crash ones) and
German tickets right; the SME rates every answer, with the right category when it is wrong.

**Why the candidate helps `en` and breaks `de`**: from the wrong English answers, GEPA's
(offline) reflection learns one rule per category keyed on the category's English words —
which fixes every English ticket, and misfires on the third of the German tickets that borrow
an English word of another category ("Betreff Fehlermeldung: nichts funktioniert (nach dem
Login)" is technical; the learned account rule, keyed on "login", says account). The loanwords
come from three categories' words ("app": technical, "tracking": shipping, "login": account),
so every learned rule fixes more English tickets than it breaks German ones and GEPA keeps
them all: over the whole feed the mean goes from ~0.52 to ~0.83 (a clear gain) while `de`
goes from 1.0 to ~0.67 (a third of its tickets broken, worse beyond doubt).
"""

from __future__ import annotations

import itertools
from typing import Any

import mlflow

from optimization.offline.datasets import SEED_ROUTER_PROMPT, support_tickets
from optimization.offline.rules import best_rule, mentions, parse_rules
from optimization.offline.skills import ROUTER_LEXICON, SupportRouter

SEGMENTED = "router_segments"
"""The prompt whose gate tests segments (policy `promotion.segments`)."""
UNSEGMENTED = "router_no_segments"
"""The same world without the segment rule."""

GERMAN_LEXICON: dict[str, tuple[str, ...]] = {
    "billing": ("Rechnung", "Rückerstattung", "Zahlung", "Lastschrift", "Gutschrift", "Abbuchung"),
    "shipping": ("Lieferung", "Paket", "Sendung", "Zustellung", "Lieferzeit", "Versandbestätigung"),
    "technical": ("Fehlermeldung", "Absturz", "Ladezeit", "Störung", "Fehlerseite", "Programmfehler"),
    "account": ("Passwort", "Anmeldung", "Benutzername", "Profil", "Kontosperre", "Zugangsdaten"),
}
"""The German words the task model routes a German ticket by (none of them is an English signal word)."""

_GERMAN_TEMPLATES = (
    "Hallo, ich habe ein Problem: {kw}",
    "Frage zum Thema {kw}, bitte um Hilfe",
    "Dringend: {kw} seit gestern nicht in Ordnung",
    "Guten Tag, mit {kw} stimmt etwas nicht",
    "Betreff {kw}: nichts funktioniert",
)

LOANWORDS: dict[str, str] = {
    "technical": "in der App",
    "shipping": "laut Tracking",
    "account": "nach dem Login",
}
"""English signal words German tickets borrow, by the category whose learned rule they trigger."""

_ROUTER = SupportRouter()


def german_category(ticket: str) -> str | None:
    """The category whose German words occur most in `ticket` (None: not a German ticket)."""
    hits = {c: sum(mentions(ticket, w) for w in words) for c, words in GERMAN_LEXICON.items()}
    category, count = max(hits.items(), key=lambda item: item[1])
    return category if count else None


def route(instructions: str, ticket: str) -> str:
    """The task model: a matching rule decides; else German words; else the router's wrong guess."""
    if best_rule(parse_rules(instructions), ticket) is None:
        german = german_category(ticket)
        if german is not None:
            return german
    return _ROUTER.answer(instructions, ticket)


def _predict(prompt: str, ticket: str) -> str:
    """Load the prompt inside the call (so GEPA and the held-out evaluation can swap its
    template), format it, and route."""
    template = mlflow.genai.load_prompt(f"prompts:/{prompt}@production")
    return route(template.format(ticket=ticket), ticket)


def predict_segments(ticket: str) -> str:
    """predict_fn of `SEGMENTED`."""
    return _predict(SEGMENTED, ticket)


def predict_no_segments(ticket: str) -> str:
    """predict_fn of `UNSEGMENTED`."""
    return _predict(UNSEGMENTED, ticket)


def german_tickets(n: int) -> list[tuple[str, str]]:
    """`n` distinct (German ticket, category), cycling through the categories; every third one
    borrows an English signal word of another category, in turn from each of `LOANWORDS`."""
    depth = min(len(words) for words in GERMAN_LEXICON.values())
    words = [(c, GERMAN_LEXICON[c][i]) for i in range(depth) for c in GERMAN_LEXICON]
    pairs = list(itertools.islice(itertools.product(_GERMAN_TEMPLATES, words), n))
    if len(pairs) < n:
        raise ValueError(f"n: at most {len(_GERMAN_TEMPLATES) * len(words)} distinct German tickets exist")
    borrowers = itertools.cycle(LOANWORDS)
    tickets = []
    for i, (template, (category, word)) in enumerate(pairs):
        text = template.format(kw=word)
        if i % 3 == 0:
            lender = next(borrowers)
            if lender == category:  # borrow from the next category instead
                lender = next(borrowers)
            text = f"{text} ({LOANWORDS[lender]})"
        tickets.append((text, category))
    return tickets


def tickets(n_per_language: int) -> list[dict[str, Any]]:
    """English and German tickets, alternating: `{"ticket", "category", "language"}`."""
    english = [
        (t["inputs"]["ticket"], t["expectations"]["expected_response"])
        for t in support_tickets(n_per_language)
    ]
    german = german_tickets(n_per_language)
    world = []
    for (en_text, en_category), (de_text, de_category) in zip(english, german, strict=True):
        world.append({"ticket": en_text, "category": en_category, "language": "en"})
        world.append({"ticket": de_text, "category": de_category, "language": "de"})
    return world


def seed_answer(ticket: str) -> str:
    """The baseline's answer: the model on the seed prompt."""
    return route(SEED_ROUTER_PROMPT.replace("{{ticket}}", ticket), ticket)


def _self_check() -> None:
    """The world's premises (import-time: a change to the offline router that breaks them fails loudly)."""
    for words in GERMAN_LEXICON.values():
        for word in words:
            assert not any(mentions(word, w) for ws in ROUTER_LEXICON.values() for w in ws), word
    for category, phrase in LOANWORDS.items():
        assert any(mentions(phrase, w) for w in ROUTER_LEXICON[category]), phrase


_self_check()
