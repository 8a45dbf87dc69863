"""`scaledown import-oscar SRC OUT`: a released OSCAR / PISCO checkpoint (NAVER's hub layout) as a ScaleDown export,
which `ScaleDownModel.from_pretrained`, `scaledown eval` and `scaledown train --train.init_from=OUT` read.

The released layout (the COCOM modeling file on the hub):
    config.json                       COCOMConfig: decoder and compressor names, compr_rate, doc_max_length, ...
    decoder_first_last_layers.pth     the decoder's resized input embeddings and LM head (added token rows)
    adapters.pth                      {"decoder_adapter": LoRA tensors (+ full embedding / head copies)}
    compressor/compressor.pth         a fully trained compressor's state dict
    compressor/first_layer.pth        a LoRA-trained trimmed compressor: its embeddings (`lora_compressor`) ...
    compressor/compressor_adapters.pth  ... and its LoRA, merged into the layers here
    compressor/mlp.pth                an encoder compressor's Linear -> ReLU -> Linear projection
Imported compressors: the trimmed decoder (`compr_model_name` mistral_trimmed: the first `compr_n_layers` layers,
trained in full or with LoRA, which is merged) and an encoder with its MLP (`BertCompressor` on any
`compr_model_name`: ScaleDown's encoder compressor). The decoder's LoRA (r from the config, alpha 2r, dropout 0.1
on all linear layers, as the modeling file builds it) and its added rows. Options that change the forward pass
in a way ScaleDown does not compute are refused by name; the export uses the reference input format
(scaledown/data/reference.py), so it reads and writes the same tokens as the released model.
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
    "kbtc_training": (False, "KBTC training"),
    "quantization": ("no", "a quantized decoder"),
    "different_mem_tokens": (True, "one memory token repeated instead of <MEM0..l-1>"),
    "lora": (True, "a fully fine-tuned decoder (no adapter to import)"),
}
TRIMMED = "mistral_trimmed"  # compr_model_name of the decoder-layers compressor; any other name is an encoder


class ReleaseError(ValueError):
    """A released checkpoint this importer cannot represent (the message names the file and field)."""


def read_config(src: Path) -> dict:
    path = src / "config.json"
    if not path.is_file():
        raise ReleaseError(f"{path}: no such file (not a released OSCAR/PISCO folder)")
    cfg = json.loads(path.read_text())
    if cfg.get("model_type") != "COCOM":
        raise ReleaseError(f"{path}: model_type={cfg.get('model_type')!r}, expected 'COCOM'")
    if not cfg.get("compr_model_name"):
        raise ReleaseError(f"{path}: compr_model_name={cfg.get('compr_model_name')!r}: a decoder that compresses "
                           "with its own layers (no separate compressor) is not supported by ScaleDown's model")
    unsupported = dict(UNSUPPORTED)
    if cfg["compr_model_name"] == TRIMMED:
        unsupported["compr_use_mlp"] = (False, "an MLP projection after a trimmed compressor")
    else:
        unsupported["compr_use_mlp"] = (True, "an encoder compressor without its MLP projection")
        unsupported["lora_compressor"] = (False, "a LoRA-trained encoder compressor")
    for name, (default, what) in unsupported.items():
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


def model_config(cfg: dict, generator: str, encoder: str | None, dtype: str) -> ModelConfig:
    l = cfg["doc_max_length"] // cfg["compr_rate"]
    if encoder:
        kind = {"compressor": "encoder", "encoder": encoder, "projection_hidden": cfg["compr_mlp_hidden_dim"]}
    else:
        kind = {"compressor": "n_layers", "compressor_layers": cfg["compr_n_layers"]}
    return ModelConfig(generator=generator, **kind, num_memory_tokens=l, max_doc_tokens=cfg["doc_max_length"],
                       max_query_tokens=64, lora_r=cfg["lora_r"], lora_alpha=2 * cfg["lora_r"], lora_dropout=0.1,
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
    decoder = base_model(src, cfg["decoder_model_name"], generator)
    encoder = None if cfg["compr_model_name"] == TRIMMED else base_model(src, cfg["compr_model_name"], None)
    config = model_config(cfg, decoder, encoder, dtype)
    if not encoder:
        compressor_base = base_model(src, cfg.get("compr_base_model_name") or cfg["decoder_model_name"], generator)
        if Path(compressor_base).resolve() != Path(decoder).resolve() and compressor_base != decoder:
            raise ReleaseError(f"{src / 'config.json'}: compr_base_model_name={cfg.get('compr_base_model_name')!r} "
                               f"differs from decoder_model_name={cfg['decoder_model_name']!r}: the n_layers "
                               "compressor is a copy of the generator's first layers")
    model = ScaleDownModel.build(config)
    with torch.no_grad():
        load_decoder(model, src)
        if encoder:
            load_encoder(model, src / "compressor")
        elif cfg.get("lora_compressor"):
            load_lora_trimmed(model, src / "compressor", cfg.get("lora_r_compressor") or cfg["lora_r"])
        else:
            load_trimmed(model, src / "compressor" / "compressor.pth")
    model.save_pretrained(out)
    log.info("imported %s -> %s (%s compressor, %d memory tokens, LoRA r %d, reference input format)", src, out,
             f"{encoder} encoder" if encoder else f"{config.compressor_layers}-layer", config.num_memory_tokens,
             config.lora_r)
    return model


def load_decoder(model, src: Path) -> None:
    """The decoder's added rows (its embeddings and head as saved) and its LoRA."""
    lm = model.generator.get_base_model()
    rows = len(model.tokenizer)
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
                               f"{model.config.generator}'s: is that the decoder it was trained on?")
        module.weight[model.base_vocab_size:] = saved[model.base_vocab_size:].to(module.weight.dtype)
    # Keyed as the modeling file saves it (no adapter name, no peft prefix).
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
        raise ReleaseError(f"{src / 'adapters.pth'}: LoRA tensors with no place here: {sorted(set(lora) - used)[:5]}")


def load_trimmed(model, path: Path, saved: dict[str, torch.Tensor] | None = None) -> None:
    """A trimmed compressor's embeddings and layers (`custom_model.model.*`; its own LM head is never used)."""
    trimmed = load_pth(path) if saved is None else saved
    saved = {k.removeprefix("custom_model.model."): v for k, v in trimmed.items()
             if k.startswith("custom_model.model.")}
    backbone = model.compressor.backbone
    state = backbone.state_dict()
    if "embed_tokens.weight" not in saved:
        raise ReleaseError(f"{path}: no custom_model.model.embed_tokens.weight")
    table = saved.pop("embed_tokens.weight")
    missing = [k for k in state if k not in saved and k != "embed_tokens.weight"]
    if missing or set(saved) - set(state):
        extra = sorted(set(saved) - set(state))[:3]
        raise ReleaseError(f"{path}: keys differ from a {model.config.compressor_layers}-layer copy of "
                           f"{model.config.generator}: missing {missing[:3]}, extra {extra}")
    embed = backbone.get_input_embeddings().weight
    if table.shape[0] > embed.shape[0]:
        raise ReleaseError(f"{path}: {table.shape[0]} embedding rows, more than the tokenizer's {embed.shape[0]}")
    embed[: table.shape[0]] = table.to(embed.dtype)  # rows past it (<AE>, <ENC>, <SEP>) never reach it
    backbone.load_state_dict({**saved, "embed_tokens.weight": embed}, strict=True)


def load_lora_trimmed(model, folder: Path, r: int) -> None:
    """A LoRA-trained trimmed compressor: the generator's first layers (already copied by the build) with the
    saved LoRA merged in (alpha 2r, as the modeling file builds it), and its saved embeddings."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    path = folder / "compressor_adapters.pth"
    # Keyed from the trimmed causal LM (`model.layers.0.self_attn.q_proj.lora_A.weight`); the backbone here is
    # its `.model`. Copies of the embeddings / head that peft adds after a vocabulary resize are not LoRA.
    lora = {k.removeprefix("model."): v for k, v in load_pth(path).items() if ".lora_" in k}
    if not lora:
        raise ReleaseError(f"{path}: no LoRA tensors")
    targets = sorted({k.split(".lora_")[0].rsplit(".", 1)[-1] for k in lora})
    tuned = get_peft_model(model.compressor.backbone, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    expected = {n.removeprefix("base_model.model.").replace(".default", "") for n, _ in tuned.named_parameters()
                if ".lora_" in n}
    if expected != set(lora):
        raise ReleaseError(f"{path}: LoRA tensors differ from a rank-{r} adapter on {targets} of a "
                           f"{model.config.compressor_layers}-layer compressor: missing "
                           f"{sorted(expected - set(lora))[:3]}, extra {sorted(set(lora) - expected)[:3]}")
    result = set_peft_model_state_dict(tuned, {f"base_model.model.{k}": v for k, v in lora.items()})
    if [k for k in result.unexpected_keys if ".lora_" in k]:
        raise ReleaseError(f"{path}: peft did not place {result.unexpected_keys[:3]}")
    model.compressor.backbone = tuned.merge_and_unload()
    model.compressor.backbone.requires_grad_(True)
    first = load_pth(folder / "first_layer.pth")
    table = [v for k, v in first.items() if k.endswith("embed_tokens.weight")]
    if len(first) != 1 or not table:
        raise ReleaseError(f"{folder / 'first_layer.pth'}: expected one embed_tokens.weight, found {sorted(first)}")
    merged = {f"custom_model.model.{k}": v for k, v in model.compressor.backbone.state_dict().items()}
    load_trimmed(model, folder / "first_layer.pth", {**merged, "custom_model.model.embed_tokens.weight": table[0]})


def load_encoder(model, folder: Path) -> None:
    """An encoder compressor (`BertCompressor`): the encoder's full state dict and the MLP projection."""
    compressor = model.compressor
    for name, module in (("compressor.pth", compressor.backbone), ("mlp.pth", compressor.projection)):
        saved = load_pth(folder / name)
        state = module.state_dict()
        wrong = {k: tuple(v.shape) for k, v in saved.items() if k in state and v.shape != state[k].shape}
        if set(state) != set(saved) or wrong:
            raise ReleaseError(f"{folder / name}: keys differ from {model.config.encoder}'s with the memory tokens "
                               f"(projection hidden {model.config.projection_hidden}): missing "
                               f"{sorted(set(state) - set(saved))[:3]}, extra {sorted(set(saved) - set(state))[:3]}, "
                               f"shapes {dict(list(wrong.items())[:3])}")
        module.load_state_dict({k: v.to(state[k].dtype) for k, v in saved.items()}, strict=True)


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
