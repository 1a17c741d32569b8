"""The dataset builder and the gate's decision, on hand-made items and scores."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.curation import DatasetItem
from core.hyperparams import DatasetConfig
from trainer import dataset, evaluate

CONTEXT = [{"n": 1, "title": "Laptops", "heading": "Delivery", "text": "Delivery takes five working days."}]


def _item(answer_id: int, question: str, answer: str = "Five working days [1].") -> DatasetItem:
    return DatasetItem(answer_id=answer_id, question=question, answer=answer, context=CONTEXT)


def test_a_question_curated_twice_is_trained_once_with_its_later_answer() -> None:
    built = dataset.from_items([_item(1, "How long does delivery take?", "A week."),
                                _item(2, "how long does delivery take"),
                                _item(3, "Who approves expenses?", "Your manager [1].")], version=1,
                               config=DatasetConfig(general_ratio=0))
    examples = built.train + built.val
    assert built.manifest["dropped_duplicates"] == 1
    assert sorted(e.answer for e in examples) == ["Five working days [1].", "Your manager [1]."]
    [delivery] = [e for e in examples if e.key == "answer:2"]
    assert delivery.messages[-1] == {"role": "assistant", "content": "Five working days [1]."}
    assert "Delivery takes five working days." in delivery.messages[0]["content"]  # the context it was drafted from


def test_the_latest_curation_of_a_question_is_trained_on_even_from_an_older_answer(database_url: str) -> None:
    from core import curation, db, feedback

    with db.connection() as conn:
        older, newer = (feedback.create_answer(conn, thread_key=f"cli:{n}", surface="cli",
                                               question="How long does delivery take?") for n in (1, 2))
        for answer_id in (older, newer):
            feedback.update_answer(conn, answer_id, status="delivered", route="answered", final_answer="A week.")
        curation.accept(conn, newer, curated_by="ann")  # last month
        curation.accept(conn, older, curated_by="ann", ideal_answer="Five working days since the policy change.")
        conn.execute("UPDATE curation_items SET curated_at = now() - interval '30 days' WHERE answer_id = %(a)s",
                     {"a": newer})
        version = curation.create_dataset(conn, created_by="ann").version
        built = dataset.build(conn, version, DatasetConfig(general_ratio=0))
    [example] = built.train + built.val
    assert example.answer == "Five working days since the policy change."


def test_answers_from_a_document_restricted_after_the_dataset_was_made_are_not_trained_on(database_url: str) -> None:
    from core import curation, db
    from core.knowledge import store
    from retrain_support import CURATED, answer_and_curate

    answer_and_curate(CURATED)
    with db.connection() as conn:
        version = curation.create_dataset(conn, created_by="ann").version   # everything public then
        expenses = next(d.id for d in store.list_documents(conn) if d.source == "expenses.md")
        store.set_visibility(conn, expenses, [], ["finance"])   # finance only, from now on
        built = dataset.build(conn, version, DatasetConfig(general_ratio=0))
        trained = {e.question for e in built.train + built.val}
        assert trained == {q for key, q, _ in CURATED if key != "expenses"}
        assert built.manifest["dropped_restricted"] == sum(key == "expenses" for key, _, _ in CURATED) == 3
        everything = dataset.build(conn, version, DatasetConfig(general_ratio=0), include_restricted=True)
        assert len(everything.train + everything.val) == len(CURATED)   # FLYWHEEL_TRAIN_ON_RESTRICTED=true
        for doc in store.list_documents(conn):
            store.set_visibility(conn, doc.id, ["C0HR"], [])
        with pytest.raises(dataset.DatasetError, match=f"Every answer in dataset v{version} draws on a document "
                                                       "not everyone may see now"):
            dataset.build(conn, version)


def test_a_held_out_question_stays_held_out_as_the_dataset_grows() -> None:
    config = DatasetConfig(val_ratio=0.2, general_ratio=0)
    small = dataset.from_items([_item(i, f"Question number {i}?") for i in range(40)], 1, config)
    large = dataset.from_items([_item(i, f"Question number {i}?") for i in range(400)], 2, config)
    assert small.val and set(small.manifest["val_keys"]) <= set(large.manifest["val_keys"])
    assert 0.1 < len(large.val) / 400 < 0.3
    assert not {e.key for e in large.train} & set(large.manifest["val_keys"])


def test_a_tiny_dataset_still_holds_one_out_and_trains_on_the_rest() -> None:
    built = dataset.from_items([_item(1, "First?"), _item(2, "Second?")], 1, DatasetConfig(general_ratio=0))
    assert (len(built.train), len(built.val)) == (1, 1)


def test_general_examples_make_up_the_configured_share_of_training() -> None:
    built = dataset.from_items([_item(i, f"Question number {i}?") for i in range(80)], 1,
                               DatasetConfig(val_ratio=0.15, general_ratio=0.3))
    general = [e for e in built.train if e.kind == "general"]
    assert general and abs(len(general) / len(built.train) - 0.3) < 0.02
    assert all(e.kind == "domain" for e in built.val)  # the gate measures the domain only


def test_only_blank_answers_is_a_clear_error() -> None:
    with pytest.raises(dataset.DatasetError, match="no accepted answers to train on"):
        dataset.from_items([_item(1, "Anything?", answer="  ")], version=4)


def _scores(f1: float, rouge: float = 0.5, grounded: float = 0.5, val_loss: float | None = 2.0) -> evaluate.Scores:
    return evaluate.Scores(val_loss=val_loss, token_f1=f1, rouge_l=rouge, groundedness=grounded, n=10)


def test_the_gate_passes_a_candidate_within_the_margin_and_names_what_fails() -> None:
    baseline = _scores(0.40)
    assert evaluate.decide(_scores(0.40), baseline, margin=0.0) == (True, [])
    assert evaluate.decide(_scores(0.36), baseline, margin=0.05)[0]  # worse, but within the margin
    passed, reasons = evaluate.decide(_scores(0.30, grounded=0.2), baseline, margin=0.05)
    assert not passed and [r.split()[0] for r in reasons] == ["token_f1", "groundedness"]
    passed, reasons = evaluate.decide(_scores(0.40, val_loss=2.2), baseline, margin=0.05)  # 10% above
    assert not passed and reasons == ["val_loss 2.2000 is above 2.0000 by more than 5%"]
    assert evaluate.decide(_scores(0.40, val_loss=2.08), baseline, margin=0.05)[0]


def test_the_gate_ends_an_answer_where_serving_ends_it(tiny_model_dir: Path) -> None:
    """The gate's answers stop at every end of turn the model's generation config names, as
    serving does (Llama 3 ends a turn with <|eot_id|>, which is not its tokenizer's eos), not
    only at the tokenizer's: it scores the answers users would get, not ones run to the limit."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    base.generation_config.eos_token_id = [tokenizer.eos_token_id, 198]
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"]))   # the gate scores a PeftModel
    assert evaluate.stop_tokens(model, tokenizer) == sorted({tokenizer.eos_token_id, 198})

    # And the answers really end there. The tiny model (tied embeddings) repeats the prompt's last
    # token; an output row made to favour "Yes" over it makes it say "Yes" first.
    says_yes = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    [yes] = tokenizer.encode("Yes", add_special_tokens=False)
    says_yes.lm_head.weight = torch.nn.Parameter(says_yes.lm_head.weight.detach().clone())   # untied
    says_yes.lm_head.weight.data[yes] = 2 * says_yes.lm_head.weight.data[198]
    asked = [[{"role": "user", "content": "How long does laptop delivery take?"}]]
    [to_the_limit] = evaluate.generate_answers(says_yes, tokenizer, asked, max_new_tokens=6)
    says_yes.generation_config.eos_token_id = [tokenizer.eos_token_id, yes]   # its end of turn
    assert evaluate.generate_answers(says_yes, tokenizer, asked, max_new_tokens=6) == ["Yes"]
    assert to_the_limit.startswith("Yes") and to_the_limit != "Yes"
