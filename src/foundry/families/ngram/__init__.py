"""The ngram family: a linear model (SVM, logistic or ridge regression) over TF-IDF word
and character n-grams of text columns, plus one-hot categories and standardised numbers;
stored as JSON vocabularies and safetensors arrays."""

from foundry.families.ngram.family import NGramFamily

__all__ = ["NGramFamily"]
