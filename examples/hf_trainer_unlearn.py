"""Unlearning with DualOptim inside the Hugging Face Trainer: a runnable sketch.

Runs offline in seconds on a tiny randomly initialised Llama and synthetic token data:

    python examples/hf_trainer_unlearn.py                 # DualOptim, 1 forget : 5 retain steps
    python examples/hf_trainer_unlearn.py --setting alternate   # the shared-optimizer baseline
    python examples/hf_trainer_unlearn.py --steps 6             # one 1:5 cycle (the tests' run)

For a real run, replace the two blocks marked "REAL RUN" (model and data) and the
TrainingArguments' toy values. Everything else -- the optimizer, the phases, logging,
checkpoints -- is the Trainer's machinery driven by DualOptimTrainer (docs/hf_trainer.md).
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, TrainingArguments

from dualoptim.integrations.hf_trainer import DualOptimTrainer
from dualoptim.optim import ObjectiveOptimizer
from dualoptim.unlearn import RunState


class GradientAscentDescent:
    """GA+GD: ascend the LM loss on forget examples, descend it on retain examples.

    Any object with these three methods works (the Method protocol of dualoptim.unlearn); the
    project's LLM methods (NPO, SimNPO, DPO, ME, IDK, KL, AP) live in dualoptim.tasks.llm.
    """

    name = "ga+gd"

    def setup(self, model: nn.Module, optimizer: ObjectiveOptimizer, run: RunState) -> None:
        # Runs once before training, on the model as given (also when resuming). The place
        # for a frozen reference copy (NPO, KL: run.extras["reference"] = copy.deepcopy(model))
        # or a mask on one objective (optimizer.set_mask("forget", {param: bool_tensor})).
        pass

    # `run` (unused here) tells a loss where the run is: run.step, run.phase, run.progress
    def forget_loss(self, model: nn.Module, batch: dict[str, Tensor], run: RunState) -> Tensor:  # noqa: ARG002
        return -model(**batch).loss

    def retain_loss(self, model: nn.Module, batch: dict[str, Tensor], run: RunState) -> Tensor:  # noqa: ARG002
        return model(**batch).loss


def synthetic_examples(n: int, vocab: int, length: int, seed: int) -> list[dict[str, Tensor]]:
    """Token sequences whose labels are the tokens themselves (the model shifts them)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (n, length), generator=gen)
    return [{"input_ids": x, "labels": x.clone()} for x in ids]


@torch.no_grad()
def mean_loss(model: nn.Module, examples: list[dict[str, Tensor]]) -> float:
    batch = {k: torch.stack([e[k] for e in examples]) for k in ("input_ids", "labels")}
    return float(model(**batch).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="dual", help="dual, dual_plus, alternate, joint, ...")
    parser.add_argument("--steps", type=int, default=36, help="optimizer steps")
    cli = parser.parse_args()

    # ---- model. REAL RUN: your fine-tuned ("target") causal LM, e.g.
    #   from transformers import AutoModelForCausalLM, AutoTokenizer
    #   model = AutoModelForCausalLM.from_pretrained("path/to/target", dtype=torch.bfloat16)
    #   tokenizer = AutoTokenizer.from_pretrained("path/to/target")
    torch.set_num_threads(1)  # toy-sized matmuls: one thread is fastest
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
    )
    model = LlamaForCausalLM(config)

    # ---- data. REAL RUN: any map-style datasets (a torch Dataset, a list, a datasets.Dataset)
    # of tokenised examples, plus a collator that pads them and masks the question tokens in
    # "labels" with -100, e.g.
    #   forget_dataset = load_dataset("json", data_files="forget10.json")["train"].map(tokenize)
    #   retain_dataset = load_dataset("json", data_files="retain90.json")["train"].map(tokenize)
    #   DualOptimTrainer(..., data_collator=my_padding_collator)  # or forget_/retain_collator=
    # Each side's examples reach the method's loss as one collated batch, every column kept.
    forget_dataset = synthetic_examples(8, config.vocab_size, 12, seed=1)
    retain_dataset = synthetic_examples(24, config.vocab_size, 12, seed=2)

    before = mean_loss(model, forget_dataset), mean_loss(model, retain_dataset)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,  # REAL RUN: a lasting directory (checkpoints land here)
            max_steps=cli.steps,  # or num_train_epochs (an epoch = one pass over the larger set)
            per_device_train_batch_size=4,  # the TOFU recipe: effective batch 40
            gradient_accumulation_steps=1,
            learning_rate=1e-3,  # toy model; the TOFU recipe is 1e-5 (the default if unset)
            weight_decay=0.01,  # none on biases and norm weights
            adam_beta2=0.95,
            lr_scheduler_type="linear",
            warmup_steps=0,  # the recipe warms up for one epoch
            max_grad_norm=1.0,  # clips both phases
            logging_steps=6,  # one 1:5 cycle per log line: loss/forget and loss/retain
            save_strategy="no",  # REAL RUN: "steps" + save_steps; resume_from_checkpoint works
            report_to=[],
            use_cpu=True,  # REAL RUN: drop this to use the GPU
            disable_tqdm=True,
        )
        trainer = DualOptimTrainer(
            model,
            args,
            method=GradientAscentDescent(),
            forget_dataset=forget_dataset,
            retain_dataset=retain_dataset,
            setting=cli.setting,
            forget_steps=1,  # T_f : T_r = 1 : 5 (SPEC §1.3, LLM row)
            retain_steps=5,
            # forget_optimizer={"name": "adamw", "lr": 1.5e-5, "betas": (0.9, 0.95),
            #                   "weight_decay": 0.01},  # e.g. DPO's η_f; default: the recipe
        )
        trainer.train()
    after = mean_loss(model, forget_dataset), mean_loss(model, retain_dataset)

    print(f"setting {cli.setting}: optimizer steps {trainer.objective_optimizer.step_counts}")
    print(f"forget loss {before[0]:.3f} -> {after[0]:.3f}  (should rise)")
    print(f"retain loss {before[1]:.3f} -> {after[1]:.3f}  (should fall)")


if __name__ == "__main__":
    main()
