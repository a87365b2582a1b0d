"""mridomain.analysis"""
