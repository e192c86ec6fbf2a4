"""_encoding"""
