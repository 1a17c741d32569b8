from __future__ import annotations

from core.llm.extractive import extractive_answer

SOURCES = [
    ("Laptops", "Laptops\n\nNew laptops are ordered in the IT portal. Delivery takes five working days. "
                "The office has plants."),
    ("VPN", "VPN\n\nThe VPN client is GlobalProtect. Sign in with your Okta account."),
]


def test_quotes_the_best_matching_sentences_with_citations() -> None:
    answer = extractive_answer("How many days does laptop delivery take?", SOURCES)
    assert "“Delivery takes five working days.” [1]" in answer
    assert "plants" not in answer or answer.index("Delivery") < answer.index("plants")


def test_cites_the_source_each_quote_comes_from() -> None:
    answer = extractive_answer("Which VPN client do we use with Okta?", SOURCES, max_sentences=1)
    assert answer == "“The VPN client is GlobalProtect.” [2]" or answer == "“Sign in with your Okta account.” [2]"


def test_says_so_when_no_passage_fits() -> None:
    assert "no passage" in extractive_answer("laptop?", [("T", "T\n\nOk.")])


def test_a_sentence_sharing_no_word_with_the_question_is_not_quoted() -> None:
    answer = extractive_answer("What does error QX7741 mean?", [("Docs", "Docs\n\nThis is document number 7 about topic 7.")])
    assert "no passage" in answer and "topic" not in answer


def test_quotes_sources_in_other_scripts_sentence_by_sentence() -> None:
    russian = ("Ноутбуки", "Ноутбуки\n\nНоутбук заказывают через портал ИТ. Доставка ноутбука занимает пять "
                           "рабочих дней. Офис открыт с девяти.")
    assert extractive_answer("Сколько времени занимает доставка ноутбука?", [russian], max_sentences=1) == \
        "“Доставка ноутбука занимает пять рабочих дней.” [1]"
    japanese = ("ノート", "ノート\n\nノートパソコンの配送には5営業日かかります。ITポータルで注文してください。会議室は二階です。")
    assert extractive_answer("ノートパソコンの配送にはどのくらいかかりますか？", [japanese], max_sentences=1) == \
        "“ノートパソコンの配送には5営業日かかります。” [1]"
