import json

import pytest

from scaledown.config import Config, ConfigError, load_config


def test_defaults_follow_the_paper():
    cfg = Config()
    assert (cfg.model.num_memory_tokens, cfg.model.max_doc_tokens, cfg.data.num_documents) == (8, 128, 5)
    assert cfg.model.compression_rate == 16
    assert (cfg.model.lora_r, cfg.model.lora_alpha, cfg.model.lora_dropout) == (16, 32, 0.1)
    assert cfg.model.rerank_weight == 0.05 and cfg.model.projection_hidden == 8096
    assert cfg.train.global_batch_size == 128 and cfg.train.epochs == 1
    assert (cfg.optim.lr_generator, cfg.optim.lr_compressor) == (1e-4, 5e-5)
    assert (cfg.optim.weight_decay, cfg.optim.warmup_ratio, cfg.optim.max_grad_norm) == (0.1, 0.05, 1.0)
    assert cfg.model.dtype == "bfloat16" and cfg.model.trust_remote_code is False


def test_encoder_compressor_lr_defaults_to_1e4():
    cfg = load_config(None, ["--model.compressor=encoder", "--model.encoder=some/encoder"])
    assert cfg.optim.lr_compressor == 1e-4


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model:\n  rerank: true\ntrain:\n  micro_batch_size: 8\n")
    cfg = load_config(path, ["--train.micro_batch_size", "16", "--optim.lr_generator=2e-4"])
    assert cfg.model.rerank is True and cfg.train.micro_batch_size == 16 and cfg.optim.lr_generator == 2e-4
    cfg.save(tmp_path / "saved.yaml")
    assert load_config(tmp_path / "saved.yaml").to_dict() == cfg.to_dict()


def test_json_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"data": {"num_documents": 3}}))
    assert load_config(path).data.num_documents == 3


@pytest.mark.parametrize("overrides, needle", [
    (["--model.compressor=bogus"], "model.compressor='bogus'"),
    (["--model.compressor=encoder"], "needs model.encoder"),
    (["--train.global_batch_size=100", "--train.micro_batch_size=8"], "global_batch_size=100"),
    (["--model.nonsense=1"], "nonsense"),
    (["--nosection.x=1"], "nosection"),
    (["--data.num_documents=0"], "data.num_documents=0"),
])
def test_invalid_values_name_the_field(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace("[", r"\[")):
        load_config(None, overrides)


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="unrecognized arguments: train.x=1"):
        load_config(None, ["train.x=1"])


def test_wrong_types_are_reported():
    with pytest.raises(ConfigError, match="train.micro_batch_size.*int.*many"):
        load_config(None, ["--train.micro_batch_size=many"])
    with pytest.raises(ConfigError, match="model.rerank.*bool.*3"):
        load_config(None, ["--model.rerank=3"])
    with pytest.raises(ConfigError, match="optim.betas"):
        load_config(None, ["--optim.betas=0.9,high"])


@pytest.mark.parametrize("args", [["--optim.betas=0.9,0.95"], ["--optim.betas", "0.9,0.95"],
                                  ["--optim.betas=[0.9, 0.95]"]])
def test_tuples_parse_to_floats(args):
    betas = load_config(None, args).optim.betas
    assert betas == (0.9, 0.95) and all(type(b) is float for b in betas)


def test_none_and_bools_parse(tmp_path):
    cfg = load_config(None, ["--optim.lr_compressor=null", "--model.rerank=true", "--train.baseline_eval=false"])
    assert cfg.optim.lr_compressor == 5e-5 and cfg.model.rerank is True and cfg.train.baseline_eval is False
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  micro_batch_sizes: 3\n")
    with pytest.raises(ConfigError, match="micro_batch_sizes"):
        load_config(bad)


def test_help_lists_every_field_with_its_docstring(capsys):
    import dataclasses

    from scaledown.config import _SECTIONS, config_parser, parse_config

    text = config_parser("scaledown train").format_help()
    for name, section in _SECTIONS.items():
        for f in dataclasses.fields(section):
            assert f"--{name}.{f.name}" in text, f"{name}.{f.name} missing from --help"
    assert "N for the `n_layers` compressor" in text and "default: 8" in text
    with pytest.raises(SystemExit) as done:
        parse_config(["--train.max_steps=7", "--print_config"])
    assert done.value.code == 0 and "max_steps: 7" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="dtype"):  # validated before it is printed
        parse_config(["--model.dtype=bf16", "--print_config"])
    with pytest.raises(ConfigError, match="unrecognized arguments: --train.max_step=7"):  # no prefix matching
        parse_config(["--train.max_step=7"])
