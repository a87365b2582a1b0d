"""mridomain.io"""
