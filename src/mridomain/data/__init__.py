"""mridomain.data"""
