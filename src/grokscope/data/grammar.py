"""The words and paradigms of grokscope's testbed grammar (:mod:`grokscope.data.testbed`),
written for grokscope: nouns (singular, plural), people with gender, verbs, adjectives,
determiners marked for number, and the four paradigms the testbed generates."""
from __future__ import annotations

# --------------------------------------------------------------------------------------
# Lexicon (written for grokscope; singular, plural)
# --------------------------------------------------------------------------------------
OBJECT_NOUNS: tuple[tuple[str, str], ...] = (
    ("lantern", "lanterns"), ("kettle", "kettles"), ("ladder", "ladders"), ("basket", "baskets"),
    ("candle", "candles"), ("blanket", "blankets"), ("window", "windows"), ("pebble", "pebbles"),
    ("bucket", "buckets"), ("carpet", "carpets"), ("wagon", "wagons"), ("mirror", "mirrors"),
    ("pillow", "pillows"), ("drum", "drums"), ("shovel", "shovels"), ("button", "buttons"),
    ("trumpet", "trumpets"), ("barrel", "barrels"), ("saddle", "saddles"), ("ribbon", "ribbons"),
    ("pocket", "pockets"), ("helmet", "helmets"), ("anchor", "anchors"), ("feather", "feathers"),
    ("box", "boxes"), ("dish", "dishes"), ("brush", "brushes"), ("torch", "torches"),
    ("bench", "benches"), ("glass", "glasses"), ("knife", "knives"), ("shelf", "shelves"),
    ("lamp", "lamps"), ("spoon", "spoons"), ("jar", "jars"), ("rope", "ropes"),
    ("coin", "coins"), ("map", "maps"), ("kite", "kites"), ("cup", "cups"),
)
# nouns used only as filler after this/these (never in a benchmark pair)
FILLER_NOUNS: tuple[tuple[str, str], ...] = (
    ("painting", "paintings"), ("letter", "letters"), ("chair", "chairs"), ("table", "tables"),
    ("book", "books"), ("stone", "stones"), ("bottle", "bottles"), ("hat", "hats"),
)
# people: (singular, plural, gender of the singular: m | f | "" = unspecified)
PEOPLE: tuple[tuple[str, str, str], ...] = (
    ("king", "kings", "m"), ("queen", "queens", "f"), ("uncle", "uncles", "m"), ("aunt", "aunts", "f"),
    ("nephew", "nephews", "m"), ("niece", "nieces", "f"), ("monk", "monks", "m"), ("nun", "nuns", "f"),
    ("prince", "princes", "m"), ("princess", "princesses", "f"), ("duke", "dukes", "m"),
    ("duchess", "duchesses", "f"), ("groom", "grooms", "m"), ("bride", "brides", "f"),
    ("waiter", "waiters", "m"), ("waitress", "waitresses", "f"),
    ("farmer", "farmers", ""), ("sailor", "sailors", ""), ("baker", "bakers", ""),
    ("pilot", "pilots", ""), ("doctor", "doctors", ""), ("painter", "painters", ""),
    ("student", "students", ""), ("tailor", "tailors", ""), ("dancer", "dancers", ""),
    ("hunter", "hunters", ""), ("miner", "miners", ""), ("clerk", "clerks", ""),
)
# intransitive verbs: (3rd singular, plural)
INTRANSITIVE: tuple[tuple[str, str], ...] = (
    ("sleeps", "sleep"), ("laughs", "laugh"), ("waits", "wait"), ("sings", "sing"),
    ("smiles", "smile"), ("wanders", "wander"), ("listens", "listen"), ("shouts", "shout"),
    ("rests", "rest"), ("works", "work"), ("dances", "dance"), ("prays", "pray"),
    ("whispers", "whisper"), ("complains", "complain"), ("travels", "travel"), ("hesitates", "hesitate"),
)
# transitive verbs in the past tense (no agreement)
TRANSITIVE_PAST: tuple[str, ...] = (
    "saw", "found", "carried", "dropped", "painted", "fixed", "bought", "sold",
    "moved", "cleaned", "opened", "borrowed", "hid", "lifted", "noticed", "wanted",
)
# verbs that take a reflexive object, past tense
REFLEXIVE_PAST: tuple[str, ...] = (
    "hurt", "praised", "blamed", "admired", "warned", "fooled", "trusted", "thanked",
    "surprised", "scared", "helped", "washed", "described", "forgave", "tricked", "defended",
)
ADJECTIVES: tuple[str, ...] = (
    "old", "small", "heavy", "bright", "dusty", "broken", "green", "quiet", "new", "cold",
    "clean", "wooden", "red", "tiny", "strange", "useful",
)
PEOPLE_ADJECTIVES: tuple[str, ...] = ("tired", "happy", "angry", "young", "busy", "calm", "kind", "proud")
PLACES: tuple[str, ...] = (
    "near the river", "in the morning", "at the market", "after dinner", "in the garden",
    "by the harbour", "on the hill", "at night", "in the kitchen", "before noon",
    "behind the barn", "in the village",
)
PREPOSITIONS: tuple[str, ...] = ("near", "behind", "beside", "with")
DET_SG: tuple[str, ...] = ("the", "a", "my", "his", "her", "our", "their", "every", "one", "each")
DET_PL: tuple[str, ...] = ("the", "my", "his", "her", "our", "their", "many", "two", "three", "some", "several", "few")
DET_NEUTRAL: tuple[str, ...] = ("the", "my", "his", "her", "our", "their")
DET_PL_ONLY: tuple[str, ...] = tuple(d for d in DET_PL if d not in DET_NEUTRAL)  # mark the plural
REFLEXIVE = {"m": "himself", "f": "herself", "pl": "themselves"}

PARADIGMS: dict[str, str] = {
    # uid -> linguistics_term (phenomenon)
    "det_noun_agreement": "determiner_noun_agreement",
    "subject_verb_agreement": "subject_verb_agreement",
    "distractor_agreement": "subject_verb_agreement",
    "anaphor_agreement": "anaphor_agreement",
}
