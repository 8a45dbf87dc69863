"""The original code's `prepare_small_real_dataset.py`: a small real training set from SQuAD, each question with
its paragraph as the document and its gold answer as the label (scaledown/build/squad.py).

    python launchers/prepare_small_real_dataset.py --dataset squad --num_examples 500 --squad_path train-v1.1.json
    python launchers/prepare_small_real_dataset.py --dataset squad --num_examples 500     # from the hub (online)

The output follows `--output_file`'s extension: `.json` the original JSON list, `.jsonl` one record per line.
For retrieved documents and teacher answers instead, build with `scaledown build --queries SQUAD --corpus ...`.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scaledown.build.squad import small_real_records  # noqa: E402
from scaledown.data.schema import DataError, atomic_write, load_records, write_jsonl  # noqa: E402


def squad_from_hub(split: str, folder: Path) -> Path:
    """`rajpurkar/squad` saved as a `datasets` folder next to the output (needs the hub)."""
    import datasets

    try:
        datasets.load_dataset("rajpurkar/squad", split=split).save_to_disk(str(folder))
    except Exception as err:  # offline: the hub's errors vary by version
        raise SystemExit(f"cannot fetch rajpurkar/squad from the hub ({type(err).__name__}); offline, download "
                         "SQuAD's train-v1.1.json or dev-v1.1.json elsewhere and pass it as --squad_path") from None
    return folder


def main(argv=None) -> Path:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    p.add_argument("--dataset", default="squad", choices=["squad"], help="the original's one real dataset")
    p.add_argument("--num_examples", type=int, default=500)
    p.add_argument("--squad_path", default=None, help="official JSON, JSONL/JSON rows or a datasets folder")
    p.add_argument("--split", default="train", help="the hub's split, or a DatasetDict folder's")
    p.add_argument("--output_file", default="train_data.json")
    args = p.parse_args(argv)
    output = Path(args.output_file)
    source = Path(args.squad_path) if args.squad_path else squad_from_hub(args.split, output.with_suffix(".squad"))
    try:
        records = small_real_records(source, args.num_examples, args.split)
    except DataError as err:
        raise SystemExit(str(err)) from None
    if output.suffix == ".jsonl":
        write_jsonl(records, output)
    else:
        atomic_write(output, json.dumps(records, indent=2, ensure_ascii=False) + "\n")
    load_records(output)  # what training will read: validated here, with file:line errors
    print(f"wrote {len(records)} SQuAD records to {output}")
    return output


if __name__ == "__main__":
    main()
