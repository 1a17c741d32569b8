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


def test_answers_in_another_script_are_scored_against_their_references() -> None:
    assert token_f1("Пять рабочих дней.", "пять рабочих дней") == 1.0
    assert rouge_l("配送には5営業日かかります", "配送には5営業日かかります。") == 1.0
    assert token_f1("Три дня.", "Пять рабочих дней.") == 0.0
