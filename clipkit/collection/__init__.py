"""Collections at scale: ``clipkit embed`` (embedding folders) and ``clipkit search`` (nearest neighbours).

``clipkit.collection.embed.embed(images, out, …)`` and ``clipkit.collection.search.search(folder, texts, …)`` are
the Python faces of the two commands; :mod:`clipkit.collection.shards` is the folder layout (clip-retrieval
compatible, docs/collection.md). Importing this package imports no torch.
"""
