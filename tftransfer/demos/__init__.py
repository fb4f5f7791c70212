"""The demos: the transfer story told end to end on data that ships offline.
"""
