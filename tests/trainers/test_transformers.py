"""The runtime monitor inside Hugging Face ``transformers``' real ``Trainer`` (installed, not mocked).

The Trainer builds the optimizer from the model, calls ``model.train()``,
``accelerator.backward``, gradient clipping, ``optimizer.step()`` and
``model.zero_grad()`` from its own code, accumulates the detached loss for
logging, and evaluates under ``no_grad`` with the model in eval mode. On correct
use every check stays silent; a pitfall written in the user's model or Trainer
subclass is reported with its code at the user's line, never inside transformers.

Tiny randomly initialised configs, synthetic token ids, two steps, nothing
downloaded, nothing saved or reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import torch
from torch import nn

from conftest import devices
from helpers import injected_line, run_pytest_trainsafe, watch
from pytest_trainsafe.finding import Finding

transformers = pytest.importorskip("transformers")
from transformers import (  # noqa: E402
    BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments,
)

VOCAB, LENGTH, CLASSES, HIDDEN = 50, 6, 2, 16


class TokenDataset(torch.utils.data.Dataset):
    """Synthetic token ids with a class label (or the ids themselves, for a language model)."""

    def __init__(self, samples: int = 8, language_model: bool = False) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, VOCAB, (samples, LENGTH), generator=generator)
        self.labels = self.ids.clone() if language_model else torch.randint(0, CLASSES, (samples,), generator=generator)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[index]}


def _bert_config() -> "BertConfig":
    return BertConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=16, num_labels=CLASSES)


def _arguments(output_dir: Path, device: str = "cpu", **options: Any) -> "TrainingArguments":
    settings: Dict[str, Any] = dict(
        output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4, per_device_eval_batch_size=4,
        report_to=[], save_strategy="no", use_cpu=device == "cpu", disable_tqdm=True,
    )
    settings.update(options)
    return TrainingArguments(**settings)


def _only(findings: List[Finding], code: str) -> None:
    """Exactly one finding: ``code``, at the line of this file marked ``# injected: <code>``."""
    got = [(f.code, f.path, f.line) for f in findings]
    assert got == [(code, __file__, injected_line(__file__, code))], findings


class CrossEntropyTrainer(Trainer):
    """A correct ``compute_loss`` override (the documented way to customise the loss)."""

    def compute_loss(self, model: nn.Module, inputs: Dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Optional[Any] = None) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = nn.functional.cross_entropy(outputs.logits, labels)
        return (loss, outputs) if return_outputs else loss


class BagOfWords(nn.Module):
    """A plain ``nn.Module`` (no PreTrainedModel) returning a dict with the loss, as the Trainer accepts."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, 8)
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(8, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        logits = self.classifier(self.dropout(self.embedding(input_ids).mean(1)))
        outputs = {"logits": logits}
        if labels is not None:
            outputs["loss"] = nn.functional.cross_entropy(logits, labels)
        return outputs


# -- correct use: no finding at all ----------------------------------------------------


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("options", [
    {},
    {"gradient_accumulation_steps": 2, "max_grad_norm": 0.5, "per_device_train_batch_size": 2,
     "eval_strategy": "steps", "eval_steps": 1},
], ids=["plain", "accumulate-clip-evaluate-during-training"])
def test_trainer_train_evaluate_predict_is_clean(tmp_path: Path, device: str, options: Dict[str, Any]) -> None:
    def run() -> None:
        torch.manual_seed(0)
        trainer = Trainer(model=BertForSequenceClassification(_bert_config()),
                          args=_arguments(tmp_path, device, **options),
                          train_dataset=TokenDataset(), eval_dataset=TokenDataset())
        trainer.train()
        trainer.evaluate()
        trainer.predict(TokenDataset(4))

    findings = watch(run)
    assert findings == [], findings


def _custom_loss(tmp_path: Path) -> Trainer:
    return CrossEntropyTrainer(model=BertForSequenceClassification(_bert_config()), args=_arguments(tmp_path),
                               train_dataset=TokenDataset(), eval_dataset=TokenDataset())


def _plain_module(tmp_path: Path) -> Trainer:
    return Trainer(model=BagOfWords(), args=_arguments(tmp_path, eval_strategy="steps", eval_steps=1),
                   train_dataset=TokenDataset(), eval_dataset=TokenDataset())


def _causal_language_model(tmp_path: Path) -> Trainer:
    # The loss is normalised by the number of label tokens, which the Trainer counts with sum().
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=HIDDEN, n_layer=1, n_head=2)
    return Trainer(model=GPT2LMHeadModel(config), args=_arguments(tmp_path, gradient_accumulation_steps=2),
                   train_dataset=TokenDataset(language_model=True), eval_dataset=TokenDataset(language_model=True))


@pytest.mark.parametrize("build", [_custom_loss, _plain_module, _causal_language_model],
                         ids=lambda build: build.__name__.strip("_"))
def test_other_correct_uses_of_the_trainer_are_clean(tmp_path: Path, build: Any) -> None:
    def run() -> None:
        torch.manual_seed(0)
        trainer = build(tmp_path)
        trainer.train()
        trainer.evaluate()

    findings = watch(run)
    assert findings == [], findings


# -- a pitfall in the user's model or Trainer subclass: its code, at the user's line ---


class FreshHead(BertForSequenceClassification):
    """The classifier is built anew in every forward: it never trains."""

    def forward(self, input_ids: Optional[torch.Tensor] = None, attention_mask: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None, **kwargs: Any) -> Dict[str, torch.Tensor]:
        pooled = self.bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        logits = nn.Linear(self.config.hidden_size, CLASSES)(pooled)  # injected: TS002
        return {"loss": nn.functional.cross_entropy(logits, labels), "logits": logits}


class SumTrainer(Trainer):
    def compute_loss(self, model: nn.Module, inputs: Dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Optional[Any] = None) -> Any:
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        losses = nn.functional.cross_entropy(outputs.logits, labels, reduction="none")
        loss = sum(losses) / len(labels)  # injected: TS005
        return (loss, outputs) if return_outputs else loss


def test_a_layer_built_in_the_models_forward_is_ts002(tmp_path: Path) -> None:
    findings = watch(lambda: Trainer(model=FreshHead(_bert_config()), args=_arguments(tmp_path),
                                     train_dataset=TokenDataset()).train())
    _only(findings, "TS002")


def test_builtin_sum_in_compute_loss_is_ts005(tmp_path: Path) -> None:
    findings = watch(lambda: SumTrainer(model=BertForSequenceClassification(_bert_config()),
                                        args=_arguments(tmp_path), train_dataset=TokenDataset()).train())
    _only(findings, "TS005")


def test_a_head_replaced_after_the_optimizer_was_built_is_ts015(tmp_path: Path) -> None:
    def run() -> None:
        model = BertForSequenceClassification(_bert_config())
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.classifier = nn.Linear(HIDDEN, CLASSES)  # injected: TS015
        Trainer(model=model, args=_arguments(tmp_path), train_dataset=TokenDataset(),
                optimizers=(optimizer, None)).train()

    _only(watch(run), "TS015")


# -- the real plugin, end to end -------------------------------------------------------

_TRAINING_TESTS = '''
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments


class Tokens(torch.utils.data.Dataset):
    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (8, 6), generator=generator)
        self.labels = torch.randint(0, 2, (8,), generator=generator)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


class SumTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = sum(nn.functional.cross_entropy(outputs.logits, labels, reduction="none"))
        return (loss, outputs) if return_outputs else loss


def train(trainer_class, output_dir):
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    arguments = TrainingArguments(output_dir=str(output_dir), max_steps=2, per_device_train_batch_size=4,
                                  report_to=[], save_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = trainer_class(model=BertForSequenceClassification(config), args=arguments,
                            train_dataset=Tokens(), eval_dataset=Tokens())
    trainer.train()
    return trainer.evaluate()


def test_training(tmp_path):
    assert "eval_loss" in train(Trainer, tmp_path)


def test_the_plugin_is_watching(trainsafe, tmp_path):
    train(SumTrainer, tmp_path)
    assert trainsafe.codes == {"TS005"}
'''


def test_pytest_trainsafe_passes_on_a_correct_transformers_test_file(tmp_path: Path) -> None:
    # nothing is fetched: make sure of it
    status, output = run_pytest_trainsafe(tmp_path, "test_transformers_training.py", _TRAINING_TESTS,
                                          HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    assert status == 0, output
    assert "2 passed" in output, output
