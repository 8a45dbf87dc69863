"""The training command line: every config field as a flag (scaledown/config.py), plus the original ScaleDown
code's `train.py` flags as aliases of config fields. Cheap to import: `--help` answers before torch loads."""

from __future__ import annotations

from scaledown.log import pop_log_level

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
    "--cache_dir": "data.memory_cache",
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
    return parse_config(expand_aliases(pop_log_level(argv)), parser)
