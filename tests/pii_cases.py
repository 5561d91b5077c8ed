"""PII test cases shared by the redactor's tests and the independent checker's: the same text must be
judged the same way by both, so they read one list."""

#: Numeric ranges, dates and the like that have a local phone's shape but are not phones.
NUMERIC_RANGES: list[str] = [
        "budget 250-1000 dollars",
        "pages 250-1000",
        "a run of 300-4000 units, then 750-1500 more",
        "from 1990-2005, then the 2019-2020 season",
        "sizes 10-20 and 100-1000",
        "$250-$1000, €250-1000, £300-5000 or ¥500-2000",
        "between 450-1250 words, pp. 345-1012, roughly 620-1310 km",
        "an essay of 450-1250 words or 250-1250 pages",
        "anywhere from 250-1000000 users",
        "J. Appl. Phys. 81(3), 1234-1240 and Nature 81(3):3280-3289",
        # from the 20 Newsgroups and blog data
        "a population of 800-1000 were killed; the reason 300-3300 Hz is used; 800-1500 sq ft",
]

#: Version numbers, ISBNs, times, money, scores and formulas: no email, phone or range rule may fire.
ORDINARY_NUMBERS: list[str] = [
        "Update to v2.3.1 (ISBN 978-3-16-148410-0, or just 978-3-16) by 10:30.",
        "It cost $1,250.00 in 1999 and €1.250,00 in 2005; 3.5-4.5 stars.",
        "Score 3-2 at 21:45 on 2021-04-15, rooms 101-120, Win 3.11 (1992-1994).",
        "Formula f(3)=2 and 2(3)+4, list (1) 2020-2021, (2) 2021-2022.",
]
