"""`instructions`: instructions with format constraints, of kdagent's own making, for the `instruct` skill.

Each instruction states its constraints in words ("in at most 30 words", "exactly 3 bullet points", "as
JSON with the keys ...") and carries them as the task's `constraints` field, read from those words by
`constraints_from_text`, so prompt and check never disagree. Seed tasks are requests to carry out (kind
`refusal`, answer `comply`) with a reference reply that meets the constraints (`solution`, used by
`feedback.fallback_to_reference`). Held-out tasks are other instructions, each a `choice` between a reply
that meets its constraints and one that breaks them (answer: the one that meets them), so the evaluation's
log-probability choice scoring measures whether the student prefers the reply that follows the format.
Note that the summed log-probability favours the shorter option; the held-out pairs are written with
comparable lengths where the constraint allows it (a word limit cannot).
"""

import random

from kdagent.domain import Domain
from kdagent.hookspecs import hookimpl
from kdagent.records import Task, stable_id
from kdagent.skills.constraints import CONSTRAINTS, check_constraints, constraints_from_text

# (instruction, a reference reply that meets its constraints)
SEED: list[tuple[str, str]] = [
    (
        "Explain what photosynthesis is in at most 30 words.",
        "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar for energy, releasing oxygen as a by-product.",
    ),
    (
        "Give exactly 3 bullet points on why sleep matters.",
        "- Sleep lets the body repair muscles and tissues.\n- It helps the brain store memories from the day.\n- Enough sleep keeps mood and focus steady.",
    ),
    ('Describe a cat as JSON with the keys "name", "color" and "age".', '{"name": "Miso", "color": "grey", "age": 3}'),
    (
        'Write a two-sentence note thanking a neighbour for watering your plants. End your reply with "Thanks again!"',
        "Dear Sam, thank you so much for watering my plants while I was away. They look happier than ever, thanks again!",
    ),
    (
        "Describe a rainy morning in two sentences, all in lowercase.",
        "the rain tapped softly on the window while the kettle began to hum. outside, the street shone grey and quiet under a low sky.",
    ),
    (
        "List 4 numbered steps for making a cup of tea.",
        "1. Boil fresh water in a kettle.\n2. Put a tea bag in a mug.\n3. Pour the hot water over the bag and wait three minutes.\n4. Remove the bag and add milk if you like.",
    ),
    (
        "Write at least 40 words about why libraries are useful.",
        "Libraries give everyone free access to books, newspapers and the internet, whatever their income. They offer quiet places to study, "
        "help from librarians who know how to find reliable information, and events for children and adults. A good library is a shared "
        "resource that makes a whole town more curious.",
    ),
    (
        'Start your answer with "Yes" and say whether water boils at a lower temperature on a mountain, in under 25 words.',
        "Yes, because the air pressure is lower at altitude, water boils below 100 degrees Celsius on a high mountain.",
    ),
    (
        'Write one sentence about autumn that uses the words "amber" and "crisp".',
        "On crisp autumn mornings the amber leaves crunch under every step along the park path.",
    ),
    (
        'Describe the ocean in at most 25 words without using the word "blue".',
        "The ocean is vast and restless, its waves rolling in from the horizon and breaking into white foam on the sand.",
    ),
    (
        "Write 2 paragraphs about the benefits of walking, separated by a blank line.",
        "Walking is one of the easiest ways to stay healthy. It strengthens the heart, keeps joints moving and needs no special equipment.\n\n"
        "It is also good for the mind. A short walk outside can lift your mood, clear your head and give you time to think.",
    ),
    ("Return a JSON array of three fruit names.", '["apple", "mango", "pear"]'),
    (
        "Give 3 bullet points of advice for a first job interview, in at most 40 words in total.",
        "- Research the company before you go.\n- Arrive ten minutes early and dress neatly.\n- Prepare two questions to ask the interviewer at the end.",
    ),
    (
        'Summarise why people recycle in at most 30 words and end with "Every bit helps."',
        "People recycle to save raw materials and energy, cut landfill waste and reduce pollution. Every bit helps.",
    ),
    (
        "List two bullet points about the moon, all lowercase.",
        "- the moon takes about 27 days to orbit the earth.\n- its gravity drives the ocean tides.",
    ),
    (
        'Explain how a bicycle works in at least 30 words, and mention the word "chain".',
        "When you push the pedals, they turn a front gear called the chainring. The chain carries that turning force to a smaller gear on "
        "the back wheel, which spins the wheel and moves the bicycle forward while you steer with the handlebars.",
    ),
    (
        'Give a recipe idea as JSON with the keys "dish" and "ingredients".',
        '{"dish": "tomato pasta", "ingredients": ["pasta", "tomatoes", "garlic", "olive oil", "basil"]}',
    ),
    (
        "Give 3 numbered tips for saving money, using at most 35 words.",
        "1. Write a monthly budget and stick to it.\n2. Cook at home instead of eating out.\n3. Move a fixed amount into savings every payday.",
    ),
    (
        'Begin with "Dear team" and write a short note announcing a Friday lunch, in at most 40 words.',
        "Dear team, we are having a lunch together this Friday at noon in the main meeting room. Food is on us, so just bring your appetite!",
    ),
    (
        'Describe a forest at night, all lowercase, without using the word "dark".',
        "owls call softly between the tall pines while moonlight slips through the branches and the cool air smells of moss and damp earth.",
    ),
    (
        "In no more than 20 words, say what a thermometer measures.",
        "A thermometer measures temperature: how hot or cold something is, such as the air or your body.",
    ),
    (
        "Give four bullet points listing things to pack for a beach day.",
        "- Sunscreen\n- A towel\n- A bottle of water\n- A hat",
    ),
    (
        "Write three paragraphs introducing yourself as a friendly robot.",
        "Hello! I am Bolt, a small friendly robot who loves helping people with everyday tasks.\n\n"
        "I can sort your mail, water your plants and remind you about birthdays. My favourite job is tidying bookshelves.\n\n"
        "When I am not working, I like to watch the sunset through the kitchen window and learn new words.",
    ),
    (
        'Tell a one-line joke about computers. End your reply with "Ha!"',
        "My computer beat me at chess, but it was no match for me at kickboxing. Ha!",
    ),
    (
        "Describe your ideal weekend in more than 25 words.",
        "My ideal weekend starts with a slow breakfast and a long walk by the river. In the afternoon I would read in a sunny garden, "
        "then cook dinner with friends and play board games until late.",
    ),
    (
        'Write two sentences about a garden that include the words "tomato", "sunflower" and "bee".',
        "A tall sunflower leans over the tomato plants in the corner of the garden. Every morning a busy bee visits each flower in turn.",
    ),
    (
        'Reply in JSON with the keys "city" and "country" for the capital of Japan.',
        '{"city": "Tokyo", "country": "Japan"}',
    ),
    (
        'Answer in fewer than 15 words, starting with "Because": why do leaves change color?',
        "Because trees stop making green chlorophyll in autumn, revealing yellow and red pigments.",
    ),
    (
        "Write five numbered steps to plant a seed.",
        "1. Fill a small pot with soil.\n2. Make a hole about one centimetre deep.\n3. Drop the seed in and cover it.\n"
        "4. Water the soil gently.\n5. Put the pot somewhere warm and sunny.",
    ),
    (
        "In all lowercase and at most 20 words, describe a cup of coffee.",
        "a warm mug of dark coffee, bitter and rich, with a thin curl of steam rising from the top.",
    ),
    (
        "Describe the smell of fresh bread in at most 25 words.",
        "Fresh bread smells warm, yeasty and slightly sweet, with a toasty note from the golden crust.",
    ),
    (
        "Say what a compass is for in under 20 words.",
        "A compass shows which way is north, so you can find your direction when travelling.",
    ),
]

# (instruction, a reply that meets its constraints, a reply that breaks them)
HELD_OUT: list[tuple[str, str, str]] = [
    (
        "Explain what gravity does in at most 25 words.",
        "Gravity pulls objects with mass toward each other, which is why dropped things fall and the planets orbit the sun.",
        "Gravity is the force that pulls objects with mass toward each other. It is the reason that a dropped apple falls to the ground, "
        "that we stay on the surface of the earth, and that the moon and planets keep moving in their orbits.",
    ),
    (
        "Give exactly 3 bullet points about why people keep dogs as pets.",
        "- Dogs are loyal companions who ease loneliness.\n- Daily walks keep their owners active.\n- Many dogs help guard the home.",
        "- Dogs are loyal companions who ease loneliness and keep their owners company.\n- Daily walks with a dog keep their owners active and healthy.",
    ),
    (
        'Describe a book as JSON with the keys "title" and "author".',
        '{"title": "Treasure Island", "author": "Robert Louis Stevenson"}',
        "The book is Treasure Island, an adventure story written by Robert Louis Stevenson.",
    ),
    (
        'Write a short reminder to water the plants. End your reply with "See you soon."',
        "Hi Alex, please remember to water the ferns on the balcony tomorrow morning before it gets hot. See you soon.",
        "Hi Alex, please remember to water the ferns on the balcony tomorrow morning before it gets hot. Thank you for the help.",
    ),
    (
        "Describe a snowy street in two sentences, all in lowercase.",
        "fresh snow covers the parked cars and muffles every footstep on the pavement. a child in a red scarf drags a sled past the bakery.",
        "Fresh snow covers the parked cars and muffles every footstep on the pavement. A child in a red scarf drags a sled past the bakery.",
    ),
    (
        "List 3 numbered steps for washing your hands.",
        "1. Wet your hands with clean running water.\n2. Lather them with soap for twenty seconds.\n3. Rinse well and dry them with a clean towel.",
        "Wet your hands with clean running water, lather them with soap for twenty seconds, then rinse well and dry them with a clean towel.",
    ),
    (
        'Write one sentence about the sea that uses the words "salt" and "wind".',
        "The wind carried the smell of salt from the sea all the way into the little harbour town.",
        "The breeze carried the smell of salt from the sea all the way into the little harbour town.",
    ),
    (
        'Describe a desert in at most 25 words without using the word "hot".',
        "A desert is a dry, sandy land where rain rarely falls, cacti store water, and nights turn surprisingly cold.",
        "A desert is a hot, sandy land where rain rarely falls, cacti store water, and nights turn surprisingly cold.",
    ),
    (
        "Write 2 paragraphs about why people enjoy music.",
        "Music lets people feel and share emotions without words. A sad song can comfort someone, and a lively one can lift a whole room.\n\n"
        "It also brings people together. Friends sing at parties, crowds dance at festivals and families pass favourite songs down the years.",
        "Music lets people feel and share emotions without words. A sad song can comfort someone, and a lively one can lift a whole room. "
        "It also brings people together. Friends sing at parties, crowds dance at festivals and families pass favourite songs down the years.",
    ),
    (
        'Start your answer with "No" and say whether the sun orbits the earth, in under 20 words.',
        "No, the earth orbits the sun, taking about one year to complete each trip around it.",
        "Actually the earth orbits the sun, taking about one year to complete each trip around it.",
    ),
    (
        "Write at least 30 words about the value of friendship.",
        "Friendship gives us people who listen when things go wrong and celebrate with us when things go right. Good friends tell us the "
        "truth, share our interests and make ordinary days feel brighter.",
        "Friends listen when things go wrong and celebrate when things go right.",
    ),
    (
        'Reply in JSON with the keys "animal" and "sound" for a cow.',
        '{"animal": "cow", "sound": "moo"}',
        'The animal is a cow and its sound is "moo".',
    ),
]


def seed_task(prompt: str, reference: str) -> Task:
    return Task(
        id=f"instr-seed-{stable_id(prompt, length=12)}",
        prompt=prompt,
        answer="comply",
        kind="refusal",
        solution=reference,
        domain="instructions",
        constraints=constraints_from_text(prompt),
    )


def held_out_task(
    prompt: str, following: str, breaking: str, prefix: str = "instr-eval", domain: str = "instructions"
) -> Task:
    """A follow-or-break pair as a `choice` task: the reply that follows the instruction is the answer."""
    return Task(
        id=f"{prefix}-{stable_id(prompt, length=12)}",
        prompt=prompt,
        choices=[following, breaking],
        answer=following,
        kind="choice",
        domain=domain,
        constraints=constraints_from_text(prompt),
    )


def pair_problems(pairs: list[tuple[str, str, str]]) -> list[str]:
    """Follow-or-break pairs whose instruction states no constraint, whose following reply breaks one, or
    whose breaking reply meets them all."""
    problems = []
    for prompt, following, breaking in pairs:
        constraints = constraints_from_text(prompt)
        if not constraints or check_constraints(following, constraints) or not check_constraints(breaking, constraints):
            problems.append(f"held-out {prompt!r}: {constraints} {check_constraints(following, constraints)}")
    return problems


class Instructions(Domain):
    name = "instructions"
    description = (
        "Instructions with format constraints (length, bullets, JSON, ...); held out as follow-vs-break reply pairs."
    )
    starter = {"skills": ["instruct"], "retrieval": {"enabled": False}}
    rubric = (
        "Grade how well the reply follows the instruction: it does what is asked and meets every format "
        "requirement the instruction states (length, bullet points, numbering, JSON, required or forbidden "
        "words, how to start or end). Score 1 (ignores the instruction) to 10 (follows it exactly). Set "
        "passed to true only if every stated requirement is met."
    )

    def __init__(self, kinds: list[str] | None = None):
        unknown = sorted(set(kinds or []) - set(CONSTRAINTS))
        if unknown:
            raise ValueError(f"unknown constraint kind {unknown[0]!r} in kinds (known: {', '.join(CONSTRAINTS)})")
        self.kinds = set(kinds) if kinds else None

    def _pool(self) -> list[Task]:
        tasks = [seed_task(p, r) for p, r in SEED]
        return [t for t in tasks if self.kinds is None or set(t.constraints) <= self.kinds]

    def seed_tasks(self, n: int, seed: int) -> list[Task]:
        pool = self._pool()
        if n > len(pool):
            raise ValueError(
                f"the instructions domain has {len(pool)} seed tasks{' of these kinds' if self.kinds else ''} (asked for {n})"
            )
        return random.Random(seed).sample(pool, n)

    def eval_tasks(self, n: int) -> list[Task]:
        if n > len(HELD_OUT):
            raise ValueError(f"the instructions domain has {len(HELD_OUT)} held-out tasks (asked for {n})")
        return [held_out_task(*item) for item in HELD_OUT[:n]]


def check_builtin() -> list[str]:
    """Problems with the built-in data (for the tests): every instruction states constraints, every
    reference and every held-out following reply meets them, every breaking reply breaks them."""
    problems = []
    for prompt, reference in SEED:
        constraints = constraints_from_text(prompt)
        if not constraints:
            problems.append(f"no constraints read from {prompt!r}")
        elif check_constraints(reference, constraints):
            problems.append(f"reference of {prompt!r}: {check_constraints(reference, constraints)}")
    return problems + pair_problems(HELD_OUT)


@hookimpl
def kdagent_register_domains(register):
    register("instructions", Instructions)
