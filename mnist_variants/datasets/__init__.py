"""The datasets: one module a dataset, each a declaration of its sources, files, classes and metadata.

Everything a declaration does not say lives once in the machinery beside this folder
(`mnist_variants/builder.py` and the modules it uses); a module here imports the machinery,
never the other way round.
"""
