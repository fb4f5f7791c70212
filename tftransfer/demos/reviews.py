"""The text demo's reviews: 48 to train on and 48 held out, written for the demo.

The reviews cover restaurants, hotels, gadgets, films, shops, books and
travel, each topic with both labels, so the topic tells nothing about the
label; the held-out ones are mostly about other products, in other words.
"""

import numpy as np

CLASS_NAMES = ("negative", "positive")

# Reviews written for this demo. Every topic appears with both labels.
TRAIN = {
    "positive": [
        "The pasta was fresh and the waiter was lovely.",
        "Best pizza I have had in years, we will be back.",
        "Cosy little cafe with excellent coffee and friendly staff.",
        "Dinner was delicious from the starter to the dessert.",
        "The hotel room was spotless and the bed was really comfortable.",
        "Check-in took two minutes and the view from our balcony was stunning.",
        "Quiet, clean and close to the station; I would stay here again.",
        "The staff upgraded our room for free, what a nice surprise.",
        "This phone's battery easily lasts two days, I am impressed.",
        "The headphones sound fantastic and fit comfortably for hours.",
        "Setting up the printer was painless and it has worked perfectly since.",
        "My new laptop is fast, light and the screen is gorgeous.",
        "A moving film with superb acting; I cried at the end.",
        "The plot kept me guessing until the very last scene, brilliant.",
        "Funny, warm and beautifully shot, a real pleasure to watch.",
        "The soundtrack alone makes this movie worth seeing.",
        "The package arrived a day early and everything was intact.",
        "Customer service answered within minutes and solved my problem.",
        "Ordering was easy and the refund for the extra item came quickly.",
        "Great value for money, exactly as described on the website.",
        "The novel is gripping, I read it in one weekend.",
        "Clear explanations and useful examples, this book taught me a lot.",
        "The flight left on time and the crew were kind and attentive.",
        "Our guide was knowledgeable and made the tour a joy.",
    ],
    "negative": [
        "The soup was cold and we waited an hour for the main course.",
        "Overpriced, bland food and a rude manager.",
        "The coffee tasted burnt and the tables were sticky.",
        "I found a hair in my salad and nobody apologised.",
        "The room smelled of smoke and the shower barely worked.",
        "Noisy all night and the air conditioning was broken.",
        "They lost our reservation and gave us a tiny room by the lift.",
        "The carpet was stained and the towels were not changed once.",
        "The phone overheats and the battery dies by lunchtime.",
        "These headphones broke after a week and the sound was tinny anyway.",
        "The printer jams on every other page, a complete waste of money.",
        "My laptop freezes constantly and the fan is unbearably loud.",
        "A dull film with wooden acting; I nearly fell asleep.",
        "The plot made no sense and the ending was a letdown.",
        "Two hours of my life I will never get back.",
        "The jokes fell flat and the dialogue was painful to sit through.",
        "The parcel arrived late and the box was crushed.",
        "Support kept me on hold for an hour and then hung up.",
        "I am still waiting for my refund three weeks later.",
        "Cheap materials, nothing like the photos on the website.",
        "The novel drags on forever and the characters are flat.",
        "Confusing, full of errors, this book was no help at all.",
        "Our flight was delayed five hours with no explanation.",
        "The tour guide was late, bored and clearly did not care.",
    ],
}


HELD_OUT = {
    "positive": [
        "Lovely breakfast, and the bakery next door is wonderful too.",
        "Our server remembered our names and the steak was perfect.",
        "Spacious room, great shower and a very helpful reception.",
        "The spa was relaxing and the pool was spotless.",
        "The camera takes sharp pictures even in low light.",
        "This vacuum cleaner is quiet and picks up everything.",
        "An exciting thriller with a clever twist.",
        "The animation is beautiful and my kids loved every minute.",
        "Delivery was quick and the courier was very polite.",
        "They replaced the faulty item without any fuss.",
        "A charming story that I would recommend to anyone.",
        "The train was comfortable and arrived right on schedule.",
        "The curry was rich and fragrant, and the naan came warm.",
        "Friendly bar staff and a great selection of local beers.",
        "The apartment was bright, modern and had everything we needed.",
        "Free parking and an excellent breakfast buffet.",
        "The keyboard feels solid and typing on it is a joy.",
        "The smartwatch tracks my runs accurately and looks elegant.",
        "The documentary was fascinating and beautifully narrated.",
        "The cast has great chemistry and the jokes land every time.",
        "My order was gift-wrapped beautifully at no extra cost.",
        "The shop assistant helped me find the perfect size.",
        "The cookbook's recipes are simple and they all turned out well.",
        "The ferry crossing was smooth and the views were breathtaking.",
    ],
    "negative": [
        "The fries were soggy and the burger was raw in the middle.",
        "We waited forever for the bill and the waiter ignored us.",
        "The walls were thin and the neighbours kept us awake.",
        "Breakfast was stale and the pool was closed all week.",
        "The camera's photos are blurry and the app keeps crashing.",
        "This vacuum cleaner is loud and barely picks up dust.",
        "A boring thriller with a predictable twist.",
        "The animation looks cheap and my kids walked out.",
        "The courier left the parcel in the rain and it was soaked.",
        "They refused to replace the faulty item.",
        "A tedious story that I would not recommend to anyone.",
        "The train was overcrowded and an hour late.",
        "The curry was watery and the rice was undercooked.",
        "The bartender was rude and the beer was warm.",
        "The apartment was dark, damp and nothing like the listing.",
        "They charged us for parking and breakfast was a joke.",
        "Several keys on this keyboard stopped working within a month.",
        "The smartwatch loses connection all the time and the strap broke.",
        "The documentary was one-sided and badly edited.",
        "The cast has no chemistry and the jokes are embarrassing.",
        "My order came in the wrong colour and returning it was a hassle.",
        "The shop assistant ignored us and then rushed us out.",
        "Half the recipes in this cookbook simply do not work.",
        "The ferry was cancelled twice and nobody told us why.",
    ],
}


def review_data():
    """The demo's reviews: ``{"train": (texts, labels), "test": (texts,
    labels)}``, labels indexing `CLASS_NAMES`."""
    def split(texts_by_class):
        texts = [t for name in CLASS_NAMES for t in texts_by_class[name]]
        labels = [i for i, name in enumerate(CLASS_NAMES) for _ in texts_by_class[name]]
        # An object array (not a list) lets `fit_head` cache the frozen
        # encoder's features.
        return np.array(texts, dtype=object), np.array(labels, dtype="int32")

    return {"train": split(TRAIN), "test": split(HELD_OUT)}
