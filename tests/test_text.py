"""The cheap checks read any script: an answer in Russian or Japanese is judged on its words."""
from __future__ import annotations

from core.agent.assess import groundedness
from core.evaluation import rouge_l, token_f1
from core.text import words

RU_SOURCE = "Доставка ноутбука занимает пять рабочих дней. Заказ оформляют в портале ИТ."
JA_SOURCE = "ノートパソコンの配送には5営業日かかります。ITポータルで注文してください。"


def test_words_of_unspaced_scripts_are_counted_by_character_pairs() -> None:
    assert words("東京都") == ["東京", "京都"]
    assert words("Don't covid-19 Доставка") == ["don", "t", "covid", "19", "доставка"]
    assert words("Don't covid-19", joined=True) == ["don't", "covid-19"]


def test_a_draft_in_another_script_that_says_what_its_source_says_is_grounded() -> None:
    assert groundedness("Доставка ноутбука занимает пять рабочих дней [1].", [RU_SOURCE]) == 1.0
    assert groundedness("配送には5営業日かかります [1]。", [JA_SOURCE]) == 1.0
    assert groundedness("Доставка ноутбука занимает 2 часа в Торонто [1].", [RU_SOURCE]) == 0.0   # no source says it
    assert groundedness("配送には2営業日かかります [1]。", [JA_SOURCE]) == 0.0   # the source says 5
    assert words("5営業日") == ["5", "営業", "業日"]


def test_a_numbered_list_is_judged_by_its_items_not_their_numbers() -> None:
    source = ("Order a new laptop in the IT portal. Submit the hardware form with your manager's approval. "
              "The laptop arrives within five working days.")
    draft = ("1. Order a new laptop in the IT portal [1].\n2) Submit the hardware form with your manager's "
             "approval [1].\n- The laptop arrives within five working days [1].")
    assert groundedness(draft, [source]) == 1.0


def test_answers_in_another_script_are_scored_against_their_references() -> None:
    assert token_f1("Пять рабочих дней.", "пять рабочих дней") == 1.0
    assert rouge_l("配送には5営業日かかります", "配送には5営業日かかります。") == 1.0
    assert token_f1("Три дня.", "Пять рабочих дней.") == 0.0


def test_a_bare_number_is_grounded_only_in_a_passage_about_what_was_asked() -> None:
    vacation = "Lisbon: 25 working days of paid vacation per calendar year. Toronto: 20 working days."
    parking = "The garage has 10 spaces for bicycles. Ask reception for a badge."
    parental = "Parental leave: 25 days paid."
    question = "How many vacation days do I get in Lisbon?"
    for wrong in ("10", "10 [2].", "It's 25 days.", "It\u2019s 25 days total.", "25 days total."):   # wrong passage
        assert groundedness(wrong, [parking, parental], question=question) == 0.0, wrong
    for right in ("25 [1].", "25 days.", "It's 25 days.", "25 working days total."):
        assert groundedness(right, [vacation, parking, parental], question=question) == 1.0, right
    assert groundedness("You get 25 working days of paid vacation per year [1].", [vacation, parking],
                        question=question) == 1.0


def test_short_list_items_without_numbers_are_judged_by_their_own_words() -> None:
    source = "Travellers need a passport, visa and photo."
    draft = "Bring the following:\n- passport\n- visa\n- photo"
    assert groundedness(draft, [source], question="What documents do I need for travel?") == 0.75


def test_a_word_and_its_plural_or_third_person_form_count_as_one() -> None:
    source = "Delivery to Toronto takes 2 hours. Returns need the original box."
    assert groundedness("It takes 2 hours.", [source], question="How long does delivery take?") == 1.0
    assert groundedness("A return needs the original box [1].", [source]) == 1.0
    assert groundedness("It takes 5 hours.", [source], question="How long does delivery take?") == 0.0
