"""mridomain.shift"""
