"""Names of the features the preprocessing hook writes and the models read.

The hook (:mod:`recbole_genrec.preprocess.hook`) writes two atomic feature files per dataset
view, each a RecBole ``preload_weight`` pair of an id token and a float sequence; the readers
(:mod:`recbole_genrec.preprocess.features`) look them up by these names.
"""

FEATURES = ("text_emb", "sid")                 # values of the ``genrec_features`` config key
EMB_SUFFIX, SID_SUFFIX = "genemb", "gensid"    # file suffixes: <dataset>.genemb, <dataset>.gensid
EMB_ID, EMB_FIELD = "genemb_id", "genemb"      # text embeddings: id token field, float_seq field
SID_ID, SID_FIELD = "gensid_id", "gensid"      # semantic IDs:    id token field, float_seq field
