"""Annotation backends: who corrects the pre-annotations, behind the same verbs (see annotators.py), with the
Label Studio sync, its REST client, the brush-RLE codec and the webhook receiver beside them."""
