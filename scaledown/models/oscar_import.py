"""`scaledown import-oscar SRC OUT`: a released OSCAR / PISCO checkpoint (NAVER's hub layout) as a ScaleDown export,
which `ScaleDownModel.from_pretrained`, `scaledown eval` and `scaledown train --train.init_from=OUT` read.

The released layout (the COCOM modeling file on the hub):
    config.json                       COCOMConfig: decoder and compressor names, compr_rate, doc_max_length, ...
    decoder_first_last_layers.pth     the decoder's resized input embeddings and LM head (added token rows)
    adapters.pth                      {"decoder_adapter": LoRA tensors (+ full embedding / head copies)}
    compressor/compressor.pth         the trimmed compressor's full state dict (`custom_model.model.*`)
Imported: a trimmed decoder compressor (`compr_model_name` mistral_trimmed, the first `compr_n_layers` layers,
trained in full), the decoder's LoRA (r from the config, alpha 2r, dropout 0.1 on all linear layers, as the
modeling file builds it) and its added rows. Options that change the forward pass in a way ScaleDown does not
compute are refused by name; the export uses the reference input format (scaledown/data/reference.py), so it
reads and writes the same tokens as the released model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from scaledown.config import ModelConfig
from scaledown.log import get_logger, pop_log_level

log = get_logger(__name__)

# COCOMConfig fields whose non-default value changes what the model computes, and why it is refused.
UNSUPPORTED = {
    "compr_rms_norm": (False, "a final RMSNorm on the compressor's output"),
    "compr_every_n_layer": (None, "a compressor made of every n-th decoder layer"),
    "compr_use_mlp": (False, "an MLP projection after a trimmed compressor"),
    "kbtc_training": (False, "KBTC training"),
    "lora_compressor": (False, "a LoRA compressor (merge it into compressor.pth first)"),
    "quantization": ("no", "a quantized decoder"),
    "different_mem_tokens": (True, "one memory token repeated instead of <MEM0..l-1>"),
    "lora": (True, "a fully fine-tuned decoder (no adapter to import)"),
}


class ReleaseError(ValueError):
    """A released checkpoint this importer cannot represent (the message names the file and field)."""


def read_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise ReleaseError(f"{path}: no such file (not a released OSCAR/PISCO folder)")
    cfg = json.loads(path.read_text())
    if cfg.get("model_type") != "COCOM":
        raise ReleaseError(f"{path}: model_type={cfg.get('model_type')!r}, expected 'COCOM'")
    if cfg.get("compr_model_name") != "mistral_trimmed":
        raise ReleaseError(f"{path}: compr_model_name={cfg.get('compr_model_name')!r}: only the trimmed decoder "
                           "compressor (mistral_trimmed) is imported; encoder compressors (BertCompressor) are not yet")
    for name, (default, what) in UNSUPPORTED.items():
        if name in cfg and cfg[name] != default:
            raise ReleaseError(f"{path}: {name}={cfg[name]!r} ({what}) is not supported by ScaleDown's model")
    return cfg


def base_model(src: Path, name: str, override: str | None) -> str:
    """The decoder named in config.json: a hub id as given, a relative path against SRC (the released config's
    relative names resolve against NAVER's working directory), or `override`."""
    if override:
        return override
    for candidate in (src / name, Path(name)):
        if candidate.exists():
            return str(candidate.resolve())
    return name


def model_config(cfg: dict, generator: str, dtype: str) -> ModelConfig:
    l = cfg["doc_max_length"] // cfg["compr_rate"]
    return ModelConfig(generator=generator, compressor="n_layers", compressor_layers=cfg["compr_n_layers"],
                       num_memory_tokens=l, max_doc_tokens=cfg["doc_max_length"], max_query_tokens=64,
                       lora_r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"], lora_dropout=0.1,
                       lora_target_modules="all-linear", dtype=dtype, input_format="reference",
                       doc_separator="<SEP>" if cfg.get("sep") else "",
                       attn_implementation=cfg.get("attn_implementation") or "sdpa")


def load_pth(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ReleaseError(f"{path}: no such file (the released layout has it)")
    return torch.load(path, map_location="cpu", weights_only=True)


def import_oscar(src: str | Path, out: str | Path, generator: str | None = None, dtype: str = "float32"):
    from scaledown.models.model import ScaleDownModel

    src = Path(src)
    cfg = read_config(src)
    config = model_config(cfg, base_model(src, cfg["decoder_model_name"], generator), dtype)
    compressor_base = base_model(src, cfg.get("compr_base_model_name") or cfg["decoder_model_name"], generator)
    if Path(compressor_base).resolve() != Path(config.generator).resolve() and compressor_base != config.generator:
        raise ReleaseError(f"{src / 'config.json'}: compr_base_model_name={cfg.get('compr_base_model_name')!r} differs "
                           f"from decoder_model_name={cfg['decoder_model_name']!r}: the n_layers compressor is a copy "
                           "of the generator's first layers")
    model = ScaleDownModel.build(config)
    lm = model.generator.get_base_model()
    rows = len(model.tokenizer)
    with torch.no_grad():
        # The decoder's added rows (and its embeddings and head as saved).
        first_last = load_pth(src / "decoder_first_last_layers.pth")
        for key, module in (("model.embed_tokens.weight", lm.get_input_embeddings()),
                            ("lm_head.weight", lm.get_output_embeddings())):
            if key not in first_last:
                continue  # a tied head: the input embeddings hold both
            saved = first_last[key]
            if saved.shape[0] != rows:
                raise ReleaseError(f"{src / 'decoder_first_last_layers.pth'}: {key} has {saved.shape[0]} rows, the "
                                   f"decoder's tokenizer with the reference's added tokens has {rows}")
            base = module.weight[: model.base_vocab_size]
            if not torch.allclose(saved[: model.base_vocab_size].to(base.dtype), base, atol=1e-3):
                raise ReleaseError(f"{src / 'decoder_first_last_layers.pth'}: {key}'s base rows differ from "
                                   f"{config.generator}'s: is that the decoder it was trained on?")
            module.weight[model.base_vocab_size:] = saved[model.base_vocab_size:].to(module.weight.dtype)
        # The decoder's LoRA, keyed as the modeling file saves it (no adapter name, no peft prefix).
        adapter = load_pth(src / "adapters.pth").get("decoder_adapter")
        if adapter is None:
            raise ReleaseError(f"{src / 'adapters.pth'}: no 'decoder_adapter' entry")
        lora = {k: v for k, v in adapter.items() if ".lora_" in k}
        used = set()
        for name, param in model.generator.named_parameters():
            if ".lora_" not in name:
                continue
            key = name.removeprefix("base_model.model.").replace(".default", "")
            if key not in lora:
                raise ReleaseError(f"{src / 'adapters.pth'}: no LoRA tensor {key} (a different adapter layout?)")
            param.copy_(lora[key].to(param.dtype))
            used.add(key)
        if set(lora) - used:
            extra = sorted(set(lora) - used)[:5]
            raise ReleaseError(f"{src / 'adapters.pth'}: LoRA tensors with no place here: {extra}")
        # The compressor: the trimmed model's embeddings and layers (its own LM head is never used).
        trimmed = load_pth(src / "compressor" / "compressor.pth")
        saved = {k.removeprefix("custom_model.model."): v for k, v in trimmed.items()
                 if k.startswith("custom_model.model.")}
        state = model.compressor.backbone.state_dict()
        table = saved.pop("embed_tokens.weight")
        missing = [k for k in state if k not in saved and k != "embed_tokens.weight"]
        if missing or set(saved) - set(state):
            raise ReleaseError(f"{src / 'compressor' / 'compressor.pth'}: keys differ from a {config.compressor_layers}"
                               f"-layer copy of {config.generator}: missing {missing[:3]}, extra "
                               f"{sorted(set(saved) - set(state))[:3]}")
        embed = model.compressor.backbone.get_input_embeddings().weight
        if table.shape[0] > embed.shape[0]:
            raise ReleaseError(f"{src / 'compressor' / 'compressor.pth'}: {table.shape[0]} embedding rows, more than "
                               f"the tokenizer's {embed.shape[0]}")
        embed[: table.shape[0]] = table.to(embed.dtype)  # rows past it (<AE>, <ENC>, <SEP>) never reach it
        model.compressor.backbone.load_state_dict({**saved, "embed_tokens.weight": embed}, strict=True)
    model.save_pretrained(out)
    log.info("imported %s -> %s (%d-layer compressor, %d memory tokens, LoRA r %d, reference input format)",
             src, out, config.compressor_layers, config.num_memory_tokens, config.lora_r)
    return model


def main(argv=None):
    from scaledown.config import command_parser

    p = command_parser(__doc__.splitlines()[0])
    p.add_argument("src", help="a released OSCAR/PISCO folder (config.json, adapters.pth, compressor/, ...)")
    p.add_argument("out", help="the ScaleDown export to write")
    p.add_argument("--generator", default=None,
                   help="the base decoder (path or hub id) instead of config.json's decoder_model_name")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    args = p.parse_args(pop_log_level(sys.argv[1:] if argv is None else argv))
    try:
        import_oscar(args.src, args.out, args.generator, args.dtype)
    except ReleaseError as err:
        raise SystemExit(f"scaledown import-oscar: {err}") from None


if __name__ == "__main__":
    main()
