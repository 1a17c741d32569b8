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
