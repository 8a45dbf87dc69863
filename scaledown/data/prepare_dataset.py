"""The original ScaleDown code's dataset command, `python -m scaledown.data.prepare_dataset ...` (torchrun works):
scaledown/build/prepare_dataset.py runs it on the sharded build. Nothing in the project imports this."""

from scaledown.build.prepare_dataset import main

if __name__ == "__main__":
    main()
