"""Stage 5, scoring: coco-caption's metrics (BLEU, METEOR, ROUGE-L, CIDEr-D) and a fast vectorised
CIDEr-D.
"""
