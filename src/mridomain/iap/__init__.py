"""mridomain.iap"""
