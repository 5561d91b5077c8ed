"""Writes stated_demographics.csv: reviews of one grocery-delivery app by three kinds of customers whose
texts say who they are (students, nurses, retirees), written for this project (no outside text).

The eval suites load it with those columns withheld from the pipeline and the writer (`withheld`), so the
personas' age and occupation claims can only come from what the texts say, and the claims group checks
them against the columns afterwards: the honest test with a floor on claims that are right, on data where
being right is possible (on the blog set the texts do not tell who wrote them).

    python evals/cases/make_stated_demographics.py   # deterministic: the same file every time
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

OUT = Path(__file__).with_name("stated_demographics.csv")
USERS_PER_GROUP = 12
TOPICAL_PER_USER = 4

GROUPS: dict[str, dict[str, object]] = {
    "student": {
        "age_group": "18-24",
        "ages": list(range(18, 24)),
        "self": [
            "I am a {age} year old college student and this app is how I eat during exam week.",
            "As a student living in a dorm I cannot carry heavy bags from the shop, so delivery saves me.",
            "I'm {age} and at university, so every euro counts when I order groceries.",
            "I'm {age}, in my second year of college, and I order with my roommates to reach the free delivery minimum.",
            "I am {age}, a student, and I use the student discount code every single week.",
            "Being a university student with lectures all day, I need my groceries delivered in the evening.",
        ],
        "topical": [
            "Instant noodles and frozen pizza arrived fine but the delivery fee is high for a small order.",
            "We split one big order between four roommates and the app makes splitting the bill annoying.",
            "Late night delivery after eleven would help a lot during exam season.",
            "The cheapest rice and pasta are often sold out by the time my lectures end.",
            "Energy drinks were warm when they arrived and the driver left them outside the dorm door.",
            "I wish the minimum order was lower, I only need milk, bread and some coffee.",
            "The student discount code stopped working at checkout twice this month.",
            "Delivery to the campus residence always takes longer because the driver cannot find the building.",
            "Cheap own-brand cereal and oat milk are all I buy, and the prices went up again.",
            "My roommate and I ordered snacks for a study group and half the chips were crushed.",
            "The app should let me pay with my student card, my bank card is always near its limit.",
            "Ordering ramen and toast for the week costs less than eating in the campus canteen.",
        ],
        "wishes": [
            "Please add a cheaper delivery option for small baskets.",
            "A bigger student discount would keep me ordering.",
            "Group orders for shared flats would be a great feature.",
            "I would order more often if the fee was lower.",
            "Honestly it is still better than walking to the shop in the rain.",
            "I hope the next update fixes this before exams start.",
            "Otherwise the app is quick and easy to use on my phone.",
            "Most of my friends on campus use it for the same reason.",
        ],
    },
    "nurse": {
        "age_group": "30-44",
        "ages": list(range(31, 44)),
        "self": [
            "I am a {age} year old nurse working twelve hour night shifts at the hospital.",
            "As a nurse on rotating shifts I never know when I can be home for a delivery.",
            "I'm {age} and I work as a nurse in the emergency ward, so I shop at odd hours.",
            "I'm {age}, a night shift nurse, and I order groceries at three in the morning during my break.",
            "I am {age}, a nurse, and after a long shift at the hospital I cannot face a supermarket.",
            "Being a nurse with weekend shifts, I need a delivery slot early in the morning before I sleep.",
        ],
        "topical": [
            "After a twelve hour shift the last thing I want is a delivery window that is missed by two hours.",
            "I plan my meal prep for the whole week of shifts and the app forgot half of the vegetables.",
            "Early morning slots at seven fill up fast, and that is the only time I am home after night duty.",
            "The driver rang the bell at noon while I was sleeping after a night shift, please respect the note.",
            "Ready meals are handy on work days but the portions are small for the price.",
            "I order healthy snacks and fruit to take to the ward, the bananas were already brown.",
            "Substitutions without asking are a problem when you plan every meal around your shifts.",
            "The app lets me reorder my weekly basket in one tap, which saves me time between shifts.",
            "Frozen vegetables and chicken breasts for batch cooking arrived well packed and cold.",
            "Coffee beans and protein bars for the hospital locker were out of stock three weeks in a row.",
            "I need delivery on my days off only, and the recurring order feature keeps choosing work days.",
            "Salad boxes for my lunch at work arrived with a use-by date of the same day.",
        ],
        "wishes": [
            "Please let me pick an exact hour instead of a four hour window.",
            "A quiet delivery option without ringing the bell would be perfect.",
            "Other people who work shifts would love a night delivery slot.",
            "I would pay a little more for reliable timing.",
            "Most weeks it still saves me hours I do not have.",
            "The customer service chat answered quickly, at least.",
            "I hope they fix this, my colleagues on the ward use the app too.",
            "Reliable fresh food matters when you barely have time to cook.",
        ],
    },
    "retired": {
        "age_group": "65-79",
        "ages": list(range(66, 79)),
        "self": [
            "I am {age} years old and retired, and since my knee operation I cannot carry shopping home.",
            "As a retired teacher on a pension I watch the prices of every item I order.",
            "I'm {age} and retired, my grandson set up the app for me on my tablet.",
            "I am {age}, retired now for six years, and I order the weekly shop so I do not have to drive to town.",
            "I am {age}, a retired postman, and the large print setting in the app helps my eyes.",
            "Being retired and living alone, I like that the driver carries the bags into my kitchen.",
        ],
        "topical": [
            "The writing in the app is too small for my eyes, a larger text option would help.",
            "My grandchildren visit on Sundays so I order extra cake, milk and fish fingers on Saturday.",
            "The driver was kind and carried the heavy water bottles up to my flat.",
            "On my pension I cannot pay a delivery fee every week, please offer a monthly plan.",
            "I prefer to pay on delivery, I do not like putting my card details into a phone.",
            "Prunes, porridge oats and tinned soup arrived fine, but the eggs were broken.",
            "The app changed its layout again and I could not find my usual order without calling my daughter.",
            "A phone number to call a real person would help when an item is missing from the bag.",
            "I order the same things every week and the app keeps suggesting foods I never eat.",
            "Delivery in the morning suits me, I go to bed early and do not want a knock at nine at night.",
            "The bags are too heavy for me to lift, smaller bags would be kinder to older customers.",
            "Fresh fruit for my grandchildren was bruised and the replacement took four days.",
        ],
        "wishes": [
            "Please keep the app simple, older people use it too.",
            "A monthly delivery plan would suit my pension better.",
            "I would like to talk to a person instead of a chat robot.",
            "My neighbours in the building would order too if it was easier.",
            "Still, it is a blessing not to carry bags up the stairs.",
            "The drivers are always polite, which I appreciate.",
            "I hope someone reads these reviews and makes the buttons bigger.",
            "It has made living on my own much easier.",
        ],
    },
}


def rows() -> list[dict[str, str]]:
    """Each text is two sentences: a self-description and an event (one text per user), or an event and a
    wish (drawn without replacement from the group's pairs), so no two texts are duplicates the cleaner
    would drop."""
    rng = random.Random(7)
    out: list[dict[str, str]] = []
    for occupation, spec in GROUPS.items():
        selves, events, wishes = (list(spec[k]) for k in ("self", "topical", "wishes"))  # type: ignore[call-overload]
        ages = list(spec["ages"])  # type: ignore[call-overload]
        # every self-description twice (4 of the 6 give an age), each with an event of its own
        self_pairs = list(zip([selves[u % len(selves)] for u in range(USERS_PER_GROUP)],
                              rng.sample(events, USERS_PER_GROUP), strict=True))  # fmt: skip
        topical_pairs = rng.sample([(a, b) for a in events for b in wishes], USERS_PER_GROUP * TOPICAL_PER_USER)
        for u in range(USERS_PER_GROUP):
            user = f"{occupation[:3]}-{u:02d}"
            first, second = self_pairs[u]
            texts = [f"{first.format(age=rng.choice(ages))} {second}"]
            texts += [f"{a} {b}" for a, b in topical_pairs[u * TOPICAL_PER_USER : (u + 1) * TOPICAL_PER_USER]]
            rng.shuffle(texts)
            for k, text in enumerate(texts):
                out.append({"text_id": f"{user}-t{k}", "user_id": user, "text": text,
                            "age_group": str(spec["age_group"]), "occupation": occupation})  # fmt: skip
    return out


if __name__ == "__main__":
    data = rows()
    with OUT.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)
    print(f"{OUT}: {len(data)} texts by {len({r['user_id'] for r in data})} users")
