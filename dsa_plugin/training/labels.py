"""The labels the md5 night rule sees (docs/reference.md §md5-selection): tuples, then mining ("-mine").

Only labels with the anchor prefix can be night (:func:`dsa_plugin.night.selection.is_night`), so
an image selected as an anchor is still day in the negative pool.

Example:
    >>> from dsa_plugin.night.selection import is_night
    >>> name = "015bb8aa57c3fbebc41daca6a093f639"
    >>> [is_night(name, label) for label in (ANCHOR, ANCHOR_MINE, NEGATIVE, NEGATIVE_POOL_MINE)]
    [True, True, False, False]
"""

#: Labels of the reference's tuples: anchor, positive, negative.
ANCHOR, POSITIVE, NEGATIVE = "anc", "pos", "neg"
#: Labels of the reference's mining passes: anchor pool (diverse anchors), anchors, negative pool.
ANCHOR_POOL_MINE, ANCHOR_MINE, NEGATIVE_POOL_MINE = "anc-pool-mine", "anc-mine", "neg-pool-mine"
