"""The `scaledown` command: one entry for the dataset build, training, evaluation, the report and the memory
estimate, and the original ScaleDown code's training flags as aliases of config fields.

    scaledown build --corpus kilt.jsonl --queries q.tsv --out runs/data     # torchrun --no-python scaledown build
    scaledown train --config configs/tiny.yaml --train.max_steps=20          # --help lists every config field
    scaledown eval --model runs/x/export --data eval.jsonl
    scaledown report runs/x
    scaledown estimate --config configs/small_gpu.yaml
"""

from __future__ import annotations

import sys

# The original code's `train.py` flags -> config fields. A flag without a value is a switch.
ALIASES = {
    "--train_data": "data.train_path",
    "--eval_data": "data.eval_path",
    "--num_layers": "model.compressor_layers",
    "--generator_model": "model.generator",
    "--output_dir": "train.output_dir",
    "--batch_size": "train.global_batch_size",
    "--num_epochs": "train.epochs",
    "--learning_rate_generator": "optim.lr_generator",
    "--learning_rate_compressor": "optim.lr_compressor",
    "--seed": "train.seed",
    "--deepspeed_config": "engine.deepspeed_config",
}
SWITCHES = {"--enable_reranking": ["--model.rerank=true"]}
DEVICES = {"gpu": "deepspeed", "trainium": "neuron", "cpu": "torch"}
COMPRESSORS = {"n_layers": ["--model.compressor=n_layers"],
               "modernbert": ["--model.compressor=encoder", "--model.encoder=answerdotai/ModernBERT-base"]}
DROPPED = ("--local_rank", "--local-rank")  # the deepspeed launcher's; LOCAL_RANK is in the environment too

ALIAS_HELP = ("The original ScaleDown code's flags are accepted too: " + ", ".join(
    f"{flag} ({field})" for flag, field in ALIASES.items()) + ", --enable_reranking (model.rerank=true), "
    "--compressor_type n_layers|modernbert (model.compressor; modernbert: the encoder compressor on "
    "answerdotai/ModernBERT-base), --device gpu|trainium|cpu (engine.backend deepspeed|neuron|torch).")


def expand_aliases(argv: list[str]) -> list[str]:
    """Rewrite the original code's flags as `--section.field=value`; everything else passes through."""
    out, i, explicit_encoder = [], 0, any(a.startswith("--model.encoder") for a in argv)
    while i < len(argv):
        flag, sep, value = argv[i].partition("=")
        takes_value = flag in ALIASES or flag in ("--device", "--compressor_type") or flag in DROPPED
        if takes_value and not sep:
            if i + 1 >= len(argv):
                raise SystemExit(f"{flag} needs a value")
            value, i = argv[i + 1], i + 1
        i += 1
        if flag in ALIASES:
            out.append(f"--{ALIASES[flag]}={value}")
        elif flag in SWITCHES:
            out += SWITCHES[flag]
        elif flag == "--device":
            if value not in DEVICES:
                raise SystemExit(f"--device {value}: expected one of {', '.join(DEVICES)}")
            out.append(f"--engine.backend={DEVICES[value]}")
        elif flag == "--compressor_type":
            if value not in COMPRESSORS:
                raise SystemExit(f"--compressor_type {value}: expected one of {', '.join(COMPRESSORS)}")
            out += [a for a in COMPRESSORS[value] if not (explicit_encoder and a.startswith("--model.encoder"))]
        elif flag not in DROPPED:
            out.append(argv[i - 1] if not takes_value else f"{flag}={value}")
    return out


def parse_train_args(argv: list[str]):
    """The training command line -> Config; `--help` and `--print_config` exit here, before torch is imported."""
    from scaledown.config import config_parser, parse_config

    parser = config_parser("scaledown train", "Train an OSCAR compressor + LoRA generator. Every config field "
                           "is a flag: --config FILE, then --section.field=value overrides.")
    parser.epilog = ALIAS_HELP
    return parse_config(expand_aliases(argv), parser)


COMMANDS = {
    "build": ("scaledown.data.build", "the dataset: SPLADE retrieval, reranking, teacher answers (torchrun)"),
    "prepare_dataset": ("scaledown.data.prepare_dataset", "the original code's dataset command, on the build"),
    "train": ("scaledown.train", "train from a config (the deepspeed launcher: launchers/train_gpu.py)"),
    "eval": ("scaledown.eval", "answer metrics of an export on gold answers, next to baselines"),
    "report": ("scaledown.report", "report.md and loss.png of a run folder"),
    "estimate": ("scaledown.estimate", "model-state memory per GPU for each ZeRO stage and offload choice"),
}


def main(argv: list[str] | None = None) -> None:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"  {name:<16}{text}" for name, (_, text) in COMMANDS.items()]
        print("usage: scaledown COMMAND [ARGS]   (scaledown COMMAND --help for its arguments)\n\ncommands:\n"
              + "\n".join(lines))
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    if argv[0] == "train":  # parsed first: `scaledown train --help` answers without loading torch
        cfg = parse_train_args(argv[1:])
        from scaledown.train import train

        train(cfg)
        return
    module = importlib.import_module(COMMANDS[argv[0]][0])
    module.main(argv[1:])  # not returned: a console script exits with what main returns


if __name__ == "__main__":
    main()
