"""_delivery"""
