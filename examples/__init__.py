"""Example sweep specs, shipped with the package (`repsweep.examples`).

    demo.yaml            what `repsweep demo` runs: digits, 24 trials, about 6 minutes on 2 cores
    cifar10-paper.yaml   the CIFAR-10 grid of Nguyen, Raghu & Kornblith (ICLR 2021)
"""
