"""Word lists that fill the chat prompt templates of :mod:`ptp.data.chat_tasks`: names, places, products, topics.

Each list is a ``|``-separated string so that a phrase can hold commas. Order matters for reproducibility (a seed
picks by position): append, do not sort or reorder, or the same seed gives a different prompt set.
"""

from __future__ import annotations


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.strip() for w in text.split("|") if w.strip())


def with_article(noun: str) -> str:
    """The noun with its indefinite article (``an architect``, ``a nurse``)."""
    return ("an " if noun[:1].lower() in "aeiou" else "a ") + noun


NAMES = _words("""
Amara | Ben | Chen | Dalia | Emeka | Farah | Gustav | Hana | Ibrahim | Jonas | Kavya | Liam | Mei | Nadia | Oscar |
Priya | Quentin | Rosa | Samir | Tomas | Uma | Victor | Wen | Ximena | Yusuf | Zoe | Aiko | Bruno | Carmen | Dmitri |
Elena | Felix | Grace | Hugo | Ines | Jamal | Keiko | Lars | Maya | Nikhil | Olga | Pablo | Rahul | Sofia | Tariq |
Valentina | Wanjiru | Yara | Zeynep | Anders
""")
CITIES = _words("""
Lisbon | Nairobi | Osaka | Montreal | Krakow | Lima | Hanoi | Edinburgh | Marrakesh | Auckland | Bergen | Cusco |
Tbilisi | Seville | Vancouver | Accra | Bruges | Kyoto | Valparaiso | Istanbul | Reykjavik | Zanzibar | Porto |
Ljubljana | Melbourne | Bogota | Chiang Mai | Dubrovnik | Quebec City | Tallinn | Cape Town | Salzburg | Hoi An |
Oaxaca | Copenhagen | Mumbai | Santiago | Helsinki | Granada | Tunis
""")
JOBS = _words("""
nurse | carpenter | software engineer | baker | librarian | pilot | marine biologist | architect | teacher |
firefighter | accountant | florist | journalist | electrician | veterinarian | photographer | chef | pharmacist |
translator | bus driver | data analyst | beekeeper | tailor | park ranger | dentist | mechanic | violinist | potter |
lawyer | game designer
""")
COMPANY_WORDS = _words("""
North | Blue | Silver | Bright | Cedar | Harbor | Summit | Maple | Copper | Lumen | River | Orbit | Pine | Atlas |
Ember | Willow | Granite | Nova | Falcon | Meadow
""")
COMPANY_KINDS = _words("""
Logistics | Robotics | Foods | Analytics | Textiles | Energy | Studios | Pharma | Outfitters | Software | Ceramics |
Bikes | Insurance | Media | Labs
""")
DAYS = _words("Monday | Tuesday | Wednesday | Thursday | Friday | Saturday | Sunday")
MONTHS = _words("""
January | February | March | April | May | June | July | August | September | October | November | December
""")
PRODUCTS = _words("""
a solar-powered phone charger | a bamboo cutting board | noise-cancelling headphones |
a smart water bottle that tracks how much you drink | a foldable electric bike | a ceramic pour-over coffee maker |
a weighted blanket | a beginner's watercolor kit | a waterproof hiking backpack | a standing desk converter |
a set of reusable beeswax food wraps | an ergonomic mechanical keyboard | a plant-based protein bar |
a pet camera that tosses treats | a cast-iron skillet | a portable espresso maker | a sunrise alarm clock |
a language-learning board game | a compact air purifier | handmade wool socks | a coding robot for kids |
a travel pillow that packs into its own pocket | a refillable fountain pen | an indoor herb garden kit |
a yoga mat made of recycled plastic | a budget planner notebook | a rechargeable bike light | a cordless vacuum |
a set of stackable storage boxes | a graphic novel for teenagers | a lavender-scented candle | a smart thermostat |
a children's rain jacket | a trail running shoe | a meditation app | an online pottery class |
a monthly box of bread from a local bakery | a gift card for a secondhand bookshop | a heated bird bath |
a pocket-sized tripod
""")
ADJECTIVES = _words("""
playful | elegant | practical | luxurious | eco-friendly | minimalist | bold | cozy | high-tech | affordable | rugged |
whimsical
""")
BUYERS = _words("""
busy parents | college students | retirees | gamers | small-business owners | new homeowners | outdoor enthusiasts |
people who work from home | first-time cooks | frequent travelers | artists | city commuters
""")
AUDIENCES = _words("""
a ten-year-old | a complete beginner | a busy manager | a high-school student | an experienced programmer |
my grandmother | someone learning English | a university student | a journalist | a new employee on their first day
""")
TONES = _words("""
friendly | formal | enthusiastic | apologetic | humorous | calm and reassuring | persuasive | concise and direct |
warm | professional
""")
EMAIL_TASKS = _words("""
ask my landlord to repair a leaking kitchen tap | decline a job offer politely |
invite my team to a farewell lunch for a colleague | ask a professor for an extension on an essay |
thank a neighbor for looking after my cat | request a refund for a damaged parcel |
remind a client about an unpaid invoice | introduce myself to a new project partner |
reschedule a dentist appointment | ask my manager for a day off next Friday | follow up after a job interview |
complain to a hotel about a noisy room | welcome a new member to a book club |
ask a supplier for a price quote on 500 notebooks | apologise to a customer for a delayed delivery |
propose a weekly check-in meeting to my team | congratulate a friend on finishing a marathon |
ask a local bakery to cater a small party | tell my tenants that the water will be off on Tuesday |
recommend a former intern for a scholarship | cancel a gym membership | ask a colleague to review my slides |
announce new office opening hours | invite a guest speaker to a school event |
ask my neighbors to join a street clean-up
""")
CHARACTERS = _words("""
a retired lighthouse keeper | a nervous young wizard | a robot who wants to paint | a street musician |
a detective who is afraid of the dark | a grandmother who builds rockets | a lonely dragon |
a chef who lost her sense of taste | a boy who can talk to pigeons | a time-traveling librarian |
an astronaut on her first mission | a shy ghost | a fox who runs a bakery | twin sisters who never agree |
a mail carrier in a snowy village | an inventor whose inventions never work | a cat who thinks it is a dog |
a gardener who grows a giant pumpkin | a stage magician past his prime | a teenage hacker with a conscience
""")
SETTINGS = _words("""
an abandoned space station | a tiny island with one café | a night market | a flooded city |
a mountain village during a blizzard | a library that never closes | a train crossing the desert |
a floating city in the clouds | an old theatre on its last night | a forest where it is always autumn |
an underwater research base | a busy hospital at midnight | a small-town science fair | a ship lost in fog |
a rooftop garden in a big city | a castle turned into a hotel
""")
STORY_ELEMENTS = _words("""
a letter that arrives forty years late | a map with a street that does not exist | a missing key |
an unexpected storm | a stranger who knows everyone's name | a clock that runs backwards | a secret recipe |
a lost dog that leads the way | a power cut | a wrong phone number | a borrowed umbrella |
a song nobody remembers writing | a door that only opens on Tuesdays | an apology that comes too late
""")
POEM_FORMS = _words("""
haiku | sonnet | limerick | short free-verse poem | poem in rhyming couplets | four-line poem | acrostic poem |
ballad of three stanzas | poem of exactly four stanzas | tanka
""")
SUBJECTS = _words("""
the first rain after a drought | a forgotten umbrella | city lights at night | an old pair of boots |
the smell of fresh bread | a cat asleep in the sun | learning to ride a bike | the last day of summer | a cup of tea |
a broken clock | the ocean in winter | moving to a new city | a grandmother's garden | a long train journey |
the sound of typing | autumn leaves | a lighthouse | friendship | patience | a debugging session at 2 a.m. |
a quiet Sunday morning | the moon over the harbour | a new notebook | snow on a busy street | homesickness |
a bicycle | bees in a lavender field | the first day at a new job | an empty playground | starlight
""")
MOODS = _words("joyful | melancholy | hopeful | nostalgic | playful | mysterious | peaceful | angry | bittersweet")
EVENTS = _words("""
a bake sale at the local school | a free bike repair workshop | a neighborhood garage sale | a charity 5K run |
a chess club for beginners | a tree-planting day | a used-book swap | a jazz night at the library |
a repair café where volunteers fix broken toys and lamps | a coding workshop for teenagers |
an outdoor movie night in the park | a blood donation drive
""")
OCCASIONS = _words("""
my sister's wedding | a colleague's retirement | my parents' fortieth anniversary |
a team that just shipped a big project | a friend's graduation | a New Year's Eve dinner |
the opening of a community garden | my grandfather's ninetieth birthday | a farewell party for a neighbor
""")
ACTIVITIES = _words("""
a rainy-day activity with kids | a team-building event for a remote team | cheap date nights |
using leftover rice | a science-fair project | a short weekend trip | making a small apartment feel bigger |
learning a new language faster | reducing food waste at home | a birthday party for a seven-year-old |
staying focused while studying | starting a vegetable garden on a balcony | a podcast about local history |
saving money on groceries | a fundraiser for an animal shelter
""")
HOW_TOS = _words("""
making a paper airplane | repotting a houseplant | fixing a flat bike tire | brewing a good pot of tea |
setting up a new email account | folding a fitted sheet | planting tomatoes | writing a to-do list that works |
backing up the photos on a phone | packing for a week-long trip with one bag | preparing for a job interview |
cleaning a cast-iron pan | making a simple budget | learning to touch type | hanging a picture straight
""")
PERSONAS = _words("""
a pirate captain | a guide at a natural history museum | a medieval blacksmith | the onboard computer of a spaceship |
a hard-boiled detective | a famous French chef | a patient librarian | an energetic personal trainer |
a tour guide in {city} | a travel agent | an interviewer hiring for a software company |
a customer support agent for an internet provider | a wise old wizard | a sports commentator |
a nineteenth-century explorer | a kindergarten teacher | a grumpy cat who can talk | a Shakespearean actor |
a news reporter at a county fair | a barista at a busy café | a park ranger | a time traveler from the year 2300 |
a fortune teller | a career counselor | a knight guarding a bridge | a late-night radio DJ | a flight attendant |
a stand-up comedian | a gardener | a friendly alien visiting Earth for the first time | a history teacher |
a mountain guide | a chess coach | a real-estate agent | a retired astronaut | an innkeeper in a fantasy village |
a marine biologist on a research boat | a robot butler | a film director
""")
WRITING_CONSTRAINTS = _words("""
Keep it under 150 words. | Use simple words. | Make it funny. | Give it a title. | End with a question. |
Write it in the first person. | Include one surprising detail. | Avoid clichés. | Use exactly three paragraphs. |
Aim for about 100 words. | Make it suitable for children. | Write it in the present tense.
""")
ROLEPLAY_REQUESTS = _words("""
Introduce yourself and describe a typical day. | What is the hardest part of your work? |
Tell me about the most surprising thing that ever happened to you. |
Give me three pieces of advice for a beginner in your line of work. | I am new here. What should I know first? |
Describe the place where you spend most of your time. | Convince me to try something you love. |
What would you say to someone having a terrible day? | Tell me a short story from your past. |
Explain your job to a child. | What do you think about smartphones? |
What is the best way to spend a rainy afternoon? | Describe your favourite meal and why you love it. |
I made a mistake at work today. How should I handle it? | Teach me one useful skill in three steps. |
What is something people always get wrong about you? | Plan a weekend for me. |
Give me a pep talk before my exam tomorrow. | Describe what you see around you right now. |
What would you change about your world if you could?
""")
USER_ROLES = _words("""
a curious tourist | a new apprentice | a journalist writing a profile | a worried customer | a seven-year-old |
an old friend you have not seen in years
""")
GENERAL_CONCEPTS = _words("""
photosynthesis | inflation | compound interest | the water cycle | supply and demand | plate tectonics |
the greenhouse effect | vaccination | opportunity cost | natural selection | the placebo effect | gravity |
a black hole | democracy | the scientific method | recycling | a credit score | jet lag | the immune system |
renewable energy | biodiversity | the stock market | a solar eclipse | the tides | a budget deficit |
the circadian rhythm | erosion | a carbon footprint | fermentation | the food chain | a mortgage |
electric current | the Doppler effect | cognitive bias | ocean currents | the metric system | a recession |
habit formation | the nitrogen cycle | active listening
""")
CS_CONCEPTS = _words("""
recursion | a hash table | Big-O notation | a race condition | garbage collection | an API | version control |
a linked list | binary search | caching | a deadlock | encryption | a compiler | an interpreter | a unit test |
dependency injection | a REST API | a database index | concurrency | a closure | a decorator in Python |
a generator in Python | a context manager | duck typing | a virtual environment | regular expressions |
a binary tree | dynamic programming | a queue | a stack | memoization | floating-point rounding error | Unicode |
UTF-8 | a mutex | an event loop | type hints | immutability | a pure function | lazy evaluation | a hash function |
a checksum | a socket | JSON | serialization | a file descriptor | a shell pipeline | two's complement | a bit mask |
a priority queue | a graph | breadth-first search | an open-source license | code review | continuous integration |
technical debt | refactoring
""")
CONCEPT_PAIRS = tuple(
    tuple(pair.split(" / "))
    for pair in _words("""
a list / a tuple | a process / a thread | a compiler / an interpreter | TCP / UDP | a stack / a queue |
recursion / iteration | SQL databases / document databases | a class / an object | static typing / dynamic typing |
unit tests / integration tests | a library / a framework | concurrency / parallelism | `is` / `==` in Python |
a shallow copy / a deep copy | a set / a list | weather / climate | a virus / a bacterium |
renting a home / buying one | saving / investing | a simile / a metaphor | speed / velocity | mitosis / meiosis |
an atom / a molecule | nuclear fission / nuclear fusion | a debit card / a credit card | stocks / bonds |
baking soda / baking powder | a crocodile / an alligator | a lake / a pond | a résumé / a cover letter |
email / instant messaging | working from home / working in an office | e-books / printed books |
trains / planes for travel within Europe | tea / coffee | cats / dogs as pets | running / swimming for fitness |
learning by reading / learning by doing | a tablet / a laptop for students | a spreadsheet / a database
""")
)
PROGRAMMING_LANGUAGES = _words("JavaScript | TypeScript | Go | Rust | Java | C | C++ | Ruby | Kotlin | Swift | C#")
LANGUAGES = _words("""
French | German | Spanish | Italian | Portuguese | Dutch | Swedish | Polish | Turkish | Japanese | Chinese | Russian |
Korean | Indonesian | Greek
""")
CODE_TASKS = _words("""
reverses the order of the words in a sentence | counts how often each word appears in a text |
checks whether a string is a palindrome, ignoring punctuation | merges two sorted lists into one sorted list |
removes duplicates from a list while keeping the original order | returns the n-th prime number |
converts a Roman numeral to an integer | converts an integer to binary without built-in helpers |
flattens a nested list of any depth | groups words by their first letter |
finds the longest common prefix of a list of strings | checks that a string looks like an email address |
computes the median of a list of numbers | rotates a square matrix by 90 degrees |
splits a list into chunks of size n | parses a file of key=value lines into a dictionary |
returns the k most common elements of a list | checks whether two strings are anagrams |
computes the greatest common divisor of two numbers | capitalizes the first letter of every sentence |
finds all pairs of numbers in a list that add up to a target | generates Fibonacci numbers lazily |
formats a number of seconds as hours, minutes and seconds | counts the vowels in a string |
checks whether the brackets in a string are balanced | returns the second largest number in a list |
merges two dictionaries, adding the values of shared keys | keeps a running average of a stream of numbers |
retries a function call up to three times when it raises an exception | reads a CSV file and sums one column |
shortens a string to a maximum length, adding an ellipsis | converts snake_case names to camelCase |
finds the first character that does not repeat in a string | implements a stack with push, pop and peek |
implements a least-recently-used cache | computes a factorial without recursion |
returns the elements two lists have in common | tells whether a year is a leap year |
encodes a string with a Caesar cipher | decodes run-length encoded text |
counts the lines, words and characters of a file | computes the dot product of two vectors |
lists all permutations of a short string | finds the one number missing from a list of 1 to n |
sorts a list of dictionaries by a given key | measures how long another function takes to run
""")
CODE_CONSTRAINTS = _words("""
Include a short usage example. | Keep it under 20 lines. | Explain its time complexity afterwards. |
Do not use any third-party libraries. | Add comments that explain the tricky parts. | Handle empty input gracefully. |
Add type hints. | Write it as clearly as you can for a beginner. | Include two test cases. |
Raise a clear error on invalid input.
""")
# (plural noun, lowest price, highest price); prices in cents.
SHOP_ITEMS = (
    ("apples", 40, 150), ("notebooks", 150, 600), ("pencils", 25, 120), ("movie tickets", 800, 1500),
    ("cupcakes", 200, 450), ("bus tickets", 150, 400), ("plant pots", 300, 1200), ("T-shirts", 800, 2500),
    ("paperback books", 600, 1800), ("bags of rice", 200, 800), ("jars of honey", 400, 1200),
    ("bottles of juice", 120, 400), ("packs of batteries", 300, 900), ("concert tickets", 2500, 8000),
    ("candles", 250, 900), ("mugs", 400, 1400), ("toy cars", 300, 1500), ("postcards", 50, 200),
    ("pairs of socks", 300, 1000), ("loaves of bread", 250, 600),
)  # fmt: skip
# Words of one kind, for odd-one-out puzzles.
WORD_GROUPS = {
    "fruit": _words("apple | mango | cherry | banana | pear | plum | kiwi | grape | lemon | peach"),
    "tool": _words("hammer | wrench | screwdriver | saw | chisel | pliers | drill | shovel | rake"),
    "instrument": _words("violin | trumpet | piano | flute | drum | cello | guitar | harp | clarinet"),
    "planet": _words("Mars | Venus | Jupiter | Saturn | Mercury | Neptune | Uranus"),
    "color": _words("crimson | teal | amber | violet | indigo | scarlet | turquoise | maroon"),
    "mammal": _words("otter | badger | whale | bat | camel | squirrel | hedgehog | leopard"),
    "bird": _words("sparrow | eagle | penguin | heron | parrot | owl | robin | pelican"),
    "vehicle": _words("bicycle | tram | ferry | scooter | truck | canoe | helicopter | tractor"),
    "sport": _words("tennis | rugby | fencing | rowing | cricket | volleyball | archery | judo"),
}
# Syllables of made-up words, for syllogisms about things a reader cannot know.
SYLLABLES = _words("bl | tr | gr | sn | pl | fr | zor | kip | wum | dax | fep | lun | mib | quo | rav | tol")
ENDINGS = _words("ix | op | en | ar | um | el | ig | ot")
NAME_PARTS = _words("""
Sun | Leaf | Nova | Pebble | Loop | Spark | Tide | Nest | Bloom | Drift | Echo | Fern | Glow | Hive | Kite | Moss
""")
NAME_ENDINGS = _words("ly | io | wise | craft | works | mate | nest | go | hub | kind")
