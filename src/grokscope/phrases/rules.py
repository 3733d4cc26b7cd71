"""The phrase rules: for each BLiMP paradigm, which word is **critical** (where acceptability is
decided) and which is **context** (what it depends on).

Each entry names two *selectors* (implemented in :mod:`grokscope.phrases.selectors`, read against the
pair's word alignment, BLiMP's lexicon classes and the pair's ``one_prefix_*`` /
``two_prefix_*`` metadata). The critical phrase is then the smallest contiguous span of the
good sentence covering every word that differs from the bad sentence, the critical word and
the context word.

A selector runs on the good sentence; on the bad sentence the same word is found through the
alignment when it is shared, and by running the same selector on the bad sentence when it is
one of the differing words (so "this sketch" maps to "this sketches", "students perform" to
"student perform"). Two flags refine this: ``critical_moves`` (reorderings: a differing
critical word is the same word in its new place) and ``context_each_side`` (the filler is a
role played by different words — "the vase that …" vs. "what …" — so its selector always runs
on both sentences).

Selectors (``name:argument``):

=====================  ====================================================================
``prefix_word:H``      BLiMP's one-prefix word of this sentence (``one_prefix_word_good/bad``,
                       found right after ``one_prefix_prefix``); H = ``first``/``last`` word of
                       a multi-word unit ("went bad" → "went", "grocery store" → "store")
``two_prefix_word:H``  the word scored after the differing prefix (``two_prefix_word``);
                       H = ``verb`` picks the lexical verb of a unit ("is touring" → touring)
``diff:H``             the words that differ from the other sentence: ``first``, ``last``,
                       ``noun`` (last noun), ``verb`` (first verb), ``wh`` (a wh-word),
                       ``content`` (last word other than "at"/"than"/"as")
``determiner_before``  nearest determiner before the critical word (across adjectives)
``subject_head``       head noun of the sentence's first noun phrase (skipping determiners,
                       "a lot of", adjectives and possessors: "Lucille's sisters" → sisters)
``local_subject``      head noun of the subject of the clause holding the critical word (the
                       first noun after the last complementiser / clause-embedding verb)
``object_after``       head noun of the first noun phrase after the critical word
``infinitive``         the verb after the first "to" after the critical word ("apt to *leave*")
``main_verb``          the last lexical verb of the sentence
``clause_verb``        first lexical verb after the first relativiser ("that Sharon *talked* about")
``be_before``          nearest form of "be" before the critical word (passive auxiliary)
``verb_before``        nearest verb before the critical word
``next_word``          the word right after the critical word
``reflexive``          the first reflexive pronoun
``expletive``          the first "there"
``aux_first``          the first auxiliary / modal
``last_word``          the last word of the sentence
``word_after_diff``    the word right after the last differing word
``filler``             the filler of a filler–gap dependency: a differing wh-word, else the
                       noun a differing relativiser "that" attaches to, else that "that"
``wh_word``            the first wh-word of the sentence
``conjunct_antecedent``  last noun before "and" (the antecedent of an N-bar ellipsis)
``remnant``            last word after "and" that is neither a noun nor a preposition (the
                       remnant of an N-bar ellipsis: "few" in "… and Matt revealed few.")
``quantifier``         the first determiner of the sentence
=====================  ====================================================================
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    """One paradigm's rule: selectors for the critical and the context word."""

    name: str
    critical: str
    context: str | None
    note: str  # why: the linguistic dependency in one line
    critical_moves: bool = False  # the critical word is the same word in both sentences,
    # only its position differs (reorderings): on the bad side it is found by identity
    context_each_side: bool = False  # the context is a role filled by different words in the
    # two sentences (the filler: a head noun vs. a wh-word): run its selector on each sentence
    supported: bool = True
    reason: str = ""  # why unsupported ("" if supported)


def R(name: str, critical: str, context: str | None, note: str, moves: bool = False) -> Rule:
    return Rule(name, critical, context, note, critical_moves=moves,
                context_each_side=context == "filler")


_DET_NOUN_1 = R("det_noun", "prefix_word:last", "determiner_before",
                "the noun must agree in number with its determiner")
_DET_NOUN_2 = R("det_noun", "two_prefix_word:last", "determiner_before",
                "the noun must agree in number with its determiner (the determiner differs)")
_SV_1 = R("subject_verb", "prefix_word:first", "subject_head",
          "the verb agrees with the head noun of its subject, not with a nearer noun")
_SV_2 = R("subject_verb", "two_prefix_word:first", "subject_head",
          "the verb agrees with the head noun of its subject (the subject differs)")
_ANAPHOR = R("anaphor_antecedent", "prefix_word:first", "subject_head",
             "a reflexive agrees with its antecedent, the subject of its clause")
_LOCAL_ANAPHOR = R("anaphor_local_antecedent", "prefix_word:first", "local_subject",
                   "principle A: a reflexive is bound by the subject of its own clause")
_NPI_LICENSOR = R("npi_licensor", "two_prefix_word:first", "diff:first",
                  "an NPI ('ever') needs a licensor in whose scope it stands")
_ISLAND = R("island_filler", "diff:noun", "wh_word",
            "the gap's position relative to the island decides; the dependency runs from the filler",
            moves=True)
_FILLER_GAP_END = R("filler_gap", "last_word", "filler",
                    "a filler needs a gap: the gap (or its absence) is at the end of the clause")

RULES: dict[str, Rule] = {
    # ---- determiner_noun_agreement -------------------------------------------------------
    "determiner_noun_agreement_1": _DET_NOUN_1,
    "determiner_noun_agreement_2": _DET_NOUN_2,
    "determiner_noun_agreement_irregular_1": _DET_NOUN_1,
    "determiner_noun_agreement_irregular_2": _DET_NOUN_2,
    "determiner_noun_agreement_with_adjective_1": _DET_NOUN_1,
    "determiner_noun_agreement_with_adj_2": _DET_NOUN_2,
    "determiner_noun_agreement_with_adj_irregular_1": _DET_NOUN_1,
    "determiner_noun_agreement_with_adj_irregular_2": _DET_NOUN_2,
    # ---- subject_verb_agreement -----------------------------------------------------------
    "distractor_agreement_relational_noun": _SV_1,
    "distractor_agreement_relative_clause": _SV_1,
    "regular_plural_subject_verb_agreement_1": _SV_1,
    "regular_plural_subject_verb_agreement_2": _SV_2,
    "irregular_plural_subject_verb_agreement_1": _SV_1,
    "irregular_plural_subject_verb_agreement_2": _SV_2,
    # ---- anaphor_agreement ---------------------------------------------------------------
    "anaphor_gender_agreement": _ANAPHOR,
    "anaphor_number_agreement": _ANAPHOR,
    # ---- binding -------------------------------------------------------------------------
    "principle_A_c_command": R("anaphor_c_commanding_antecedent", "prefix_word:first", "subject_head",
                               "a reflexive is bound by the c-commanding matrix subject, "
                               "not by a noun inside the subject's relative clause"),
    "principle_A_case_1": R("anaphor_case", "prefix_word:first", "next_word",
                            "the subject of a finite verb is nominative: 'they aren't', "
                            "not a reflexive"),
    "principle_A_case_2": R("anaphor_case", "prefix_word:first", "reflexive",
                            "a reflexive subject (ECM/gerund) takes a non-finite verb"),
    "principle_A_domain_1": _LOCAL_ANAPHOR,
    "principle_A_domain_2": _LOCAL_ANAPHOR,
    "principle_A_domain_3": R("anaphor_local_antecedent", "two_prefix_word:first", "local_subject",
                              "principle A: the reflexive agrees with the subject of its own "
                              "clause (the two subjects are swapped)"),
    "principle_A_reconstruction": R("anaphor_reconstruction", "clause_verb", "reflexive",
                                    "a clefted reflexive reconstructs into the gap: bound only "
                                    "if the gap is the object of the verb", moves=True),
    # ---- irregular_forms -----------------------------------------------------------------
    "irregular_past_participle_adjectives": R("participle_adjective", "diff:first", "two_prefix_word:last",
                                              "a prenominal adjective uses the participle "
                                              "('hidden'), not the past tense ('hid')"),
    "irregular_past_participle_verbs": R("finite_past", "prefix_word:first", "subject_head",
                                         "a verb right after its subject, with no auxiliary, "
                                         "is finite past ('wore'), not a participle ('worn')"),
    # ---- argument_structure --------------------------------------------------------------
    "causative": R("verb_object", "diff:verb", "object_after",
                   "a causative/transitive verb takes this object; an intransitive one cannot"),
    "transitive": R("verb_object", "diff:verb", "object_after",
                    "a transitive verb takes this object; an intransitive one cannot"),
    "drop_argument": R("verb_sole_argument", "diff:verb", "subject_head",
                       "the verb's only argument is its subject: it must allow a dropped object"),
    "intransitive": R("verb_sole_argument", "diff:verb", "subject_head",
                      "the verb's only argument is its subject: it must be intransitive"),
    "inchoative": R("verb_sole_argument", "diff:verb", "subject_head",
                    "the subject is the theme: the verb must have an inchoative use"),
    "passive_1": R("passive_participle", "diff:verb", "be_before",
                   "after passive 'be', the participle must be of a transitive verb"),
    "passive_2": R("passive_participle", "diff:verb", "be_before",
                   "after passive 'be', the participle must be of a transitive verb"),
    # ---- s-selection ---------------------------------------------------------------------
    "animate_subject_passive": R("animate_agent", "prefix_word:last", "verb_before",
                                 "the passive verb's by-phrase agent must be animate"),
    "animate_subject_trans": R("animate_subject", "diff:noun", "two_prefix_word:verb",
                               "the verb selects an animate subject"),
    # ---- npi_licensing -------------------------------------------------------------------
    "matrix_question_npi_licensor_present": R("npi_licensor", "two_prefix_word:first", "aux_first",
                                              "'ever' is licensed in a question: the "
                                              "fronted auxiliary"),
    "npi_present_1": R("npi_alone", "prefix_word:first", None,
                       "'ever' with no licensor anywhere; the contrast is the adverb itself, "
                       "so no context word exists"),
    "npi_present_2": R("npi_alone", "prefix_word:first", None,
                       "'ever' with no licensor anywhere; the contrast is the adverb itself, "
                       "so no context word exists"),
    "only_npi_licensor_present": _NPI_LICENSOR,
    "only_npi_scope": R("npi_licensor_scope", "two_prefix_word:first", "diff:first",
                        "'only' licenses 'ever' only when its scope (the subject) includes it"),
    "sentential_negation_npi_licensor_present": _NPI_LICENSOR,
    "sentential_negation_npi_scope": R("npi_licensor_scope", "two_prefix_word:first", "diff:first",
                                       "'not' licenses 'ever' only in its own clause, not "
                                       "from inside a relative clause"),
    # ---- quantifiers ---------------------------------------------------------------------
    "existential_there_quantifiers_1": R("there_quantifier", "diff:first", "expletive",
                                         "existential 'there' requires a weak quantifier"),
    "existential_there_quantifiers_2": R("there_quantifier", "quantifier", "expletive",
                                         "a strong quantifier cannot follow existential "
                                         "'there be'"),
    "superlative_quantifiers_1": R("superlative_negation", "diff:content", "quantifier",
                                   "'at least/most' cannot be in the scope of negative 'no'"),
    "superlative_quantifiers_2": R("superlative_negation", "two_prefix_word:first", "diff:first",
                                   "'at least/most' cannot be in the scope of negative 'no'"),
    # ---- control_raising -----------------------------------------------------------------
    "existential_there_object_raising": R("raising_verb_expletive", "two_prefix_word:first", "diff:verb",
                                          "only a raising-to-object verb takes expletive "
                                          "'there' as its object"),
    "existential_there_subject_raising": R("raising_adjective_expletive", "diff:first", "expletive",
                                           "only a raising adjective takes expletive 'there' as "
                                           "its subject"),
    "expletive_it_object_raising": R("raising_verb_expletive", "expletive_it", "diff:verb",
                                     "only a raising-to-object verb takes expletive 'it' as "
                                     "its object"),
    "tough_vs_raising_1": R("tough_gap", "diff:first", "last_word",
                            "a tough adjective needs an object gap in its infinitive (at the end)"),
    "tough_vs_raising_2": R("raising_no_gap", "diff:first", "infinitive",
                            "a raising adjective's infinitive verb keeps all its arguments; a "
                            "tough adjective would need an object gap in that verb's frame"),
    # ---- ellipsis ------------------------------------------------------------------------
    "ellipsis_n_bar_1": R("nbar_ellipsis", "remnant", "conjunct_antecedent",
                          "N-bar ellipsis leaves a determiner/numeral remnant whose noun is "
                          "recovered from the antecedent; an adjective cannot be stranded"),
    "ellipsis_n_bar_2": R("nbar_ellipsis", "remnant", "conjunct_antecedent",
                          "N-bar ellipsis leaves a determiner/numeral remnant whose noun is "
                          "recovered from the antecedent; an adjective cannot be stranded"),
    # ---- filler_gap_dependency -----------------------------------------------------------
    "wh_questions_object_gap": R("filler_gap", "last_word", "filler",
                                 "a relative/wh filler needs an object gap at the end of its clause",
                                 moves=True),
    "wh_questions_subject_gap": R("filler_gap", "word_after_diff", "filler",
                                  "a relative/wh filler needs a subject gap right after it"),
    "wh_questions_subject_gap_long_distance": R("filler_gap", "word_after_diff", "filler",
                                                "a relative filler needs a subject gap right "
                                                "after the relativiser"),
    "wh_vs_that_no_gap": _FILLER_GAP_END,
    "wh_vs_that_no_gap_long_distance": _FILLER_GAP_END,
    "wh_vs_that_with_gap": _FILLER_GAP_END,
    "wh_vs_that_with_gap_long_distance": _FILLER_GAP_END,
    # ---- island_effects ------------------------------------------------------------------
    "adjunct_island": _ISLAND,
    "complex_NP_island": _ISLAND,
    "coordinate_structure_constraint_complex_left_branch": R(
        "left_branch", "diff:noun", "wh_word",
        "a wh-determiner cannot be extracted without its noun ('What senators', not 'What … senators')", moves=True),
    "coordinate_structure_constraint_object_extraction": R(
        "island_filler", "main_verb", "wh_word",
        "extraction from one conjunct only is out; the dependency runs from the filler", moves=True),
    "left_branch_island_echo_question": R(
        "left_branch", "two_prefix_word:last", "wh_word",
        "a wh-determiner cannot be extracted without its noun", moves=True),
    "left_branch_island_simple_question": R(
        "left_branch", "diff:noun", "wh_word",
        "a wh-determiner cannot be extracted without its noun", moves=True),
    "sentential_subject_island": _ISLAND,
    "wh_island": R("wh_island", "prefix_word:first", "wh_word",
                   "an embedded wh-word makes an island for the matrix filler"),
}

#: the rule for pairs whose ``uid`` is not a BLiMP paradigm: the differing words, no context.
GENERIC_RULE = R("differing_words", "diff:span", None,
                 "no paradigm rule: the critical phrase is the differing words of the good sentence")
