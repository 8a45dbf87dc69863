from scaledown.eval.cli import main

main()
