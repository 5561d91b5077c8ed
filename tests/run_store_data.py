"""Customer texts written for the run-store tests: users of three topics, each text made of phrases from
its topic's pool, so the real pipeline finds the three segments. No shared data needed."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pandas as pd

TOPICS: dict[str, list[str]] = {
    "coffee": [
        "the espresso machine heats up in under a minute",
        "my grinder makes a terrible noise every morning",
        "the light roast beans taste of berries and chocolate",
        "the bean subscription arrived late again this month",
        "I descale the coffee maker every two weeks",
        "milk frothing is still hard for me to get right",
        "a darker roast works better for my flat white",
        "the café down the street sells the same beans cheaper",
        "I weigh every dose of coffee before brewing",
        "the portafilter handle got loose after a year",
        "pour-over coffee on weekends is my little ritual",
        "decaf beans never taste fresh when they arrive",
    ],
    "running": [
        "my running shoes lost their cushioning after three months",
        "marathon training starts again in January",
        "my left knee hurts after long runs on asphalt",
        "the trail shoes grip well on wet rocks",
        "I run five kilometres before work every day",
        "the insoles gave me blisters on the first long run",
        "our running club meets on Sunday mornings",
        "I need a jacket that stays dry in the rain",
        "interval sessions on the track make me faster",
        "the heart rate strap keeps losing its signal",
        "I replaced the laces because they kept coming undone",
        "recovery days matter more than I used to think",
    ],
    "garden": [
        "the tomato seedlings need more light on the balcony",
        "slugs ate half of my lettuce overnight",
        "the compost bin smells when it gets too wet",
        "I water the raised beds every evening in summer",
        "the pruning shears went blunt after one season",
        "roses along the fence finally bloomed this year",
        "the garden hose cracked in the first frost",
        "I grow basil and mint in pots by the kitchen door",
        "mulch keeps the weeds down between the rows",
        "the lawn mower will not start after winter",
        "bees love the lavender I planted last spring",
        "heavy clay soil makes digging very hard work",
    ],
}


def customer_texts(users_per_topic: int = 20, texts_per_user: int = 3, seed: int = 0) -> pd.DataFrame:
    """One row per text: user_id, text, topic (the truth), plan (an attribute)."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    for topic, pool in TOPICS.items():
        for u in range(users_per_topic):
            user = f"{topic}-{u:04d}"
            for k in range(texts_per_user):
                a, b = rng.sample(pool, 2)
                years = rng.randint(2, 30)
                rows.append(
                    {
                        "user_id": user,
                        "text": f"{a.capitalize()}, and {b}. I have been at it for {years} years (note {k}).",
                        "topic": topic,
                        "plan": rng.choice(["basic", "plus"]),
                    }
                )
    return pd.DataFrame(rows)


def write_csv(path: Path, **kw: Any) -> Path:
    customer_texts(**kw).to_csv(path, index=False)
    return path
